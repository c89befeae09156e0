"""Agentless backup of VMware vSphere VMs onto ZFS, driven as code."""

__version__ = "0.1.0"
