"""The nbdkit command lines the product runs. vddk cannot run on this machine, so its command line is
pinned here; file and curl are also exercised for real in tests/integration/test_lab_nbd.py."""

from pathlib import Path

import pytest

from reconciler.adapters.nbd.server import CurlSource, FileSource, Listen, VddkSource, nbdkit_argv

SOCKET = Listen(socket=Path("/run/r/web-01-2000.sock"))


def test_vddk_command_line_reads_a_snapshot_disk_with_the_password_from_a_file():
    source = VddkSource(
        libdir=Path("/opt/vmware-vix-disklib-distrib"),
        server="vc.example.com",
        user="backup@vsphere.local",
        password_file=Path("/run/r/pw"),
        thumbprint="AA:BB:CC",
        vm_moref="vm-9463",
        snapshot_moref="snapshot-12",
        disk_file="[ds1] web-01/web-01.vmdk",
    )

    assert nbdkit_argv(source, SOCKET) == [
        "nbdkit", "--foreground", "--unix", "/run/r/web-01-2000.sock", "--readonly",
        "vddk",
        "libdir=/opt/vmware-vix-disklib-distrib",
        "server=vc.example.com",
        "user=backup@vsphere.local",
        "password=+/run/r/pw",
        "thumbprint=AA:BB:CC",
        "vm=moref=vm-9463",
        "snapshot=snapshot-12",
        "transports=nbd:nbdssl",
        "file=[ds1] web-01/web-01.vmdk",
    ]  # fmt: skip


def test_vddk_without_snapshot_or_transports_omits_them():
    source = VddkSource(Path("/v"), "esx", "root", Path("/pw"), "AA", "12", "[ds] a.vmdk", transports=())
    plugin_args = nbdkit_argv(source, SOCKET)[5:]
    assert not any(arg.startswith(("snapshot=", "transports=")) for arg in plugin_args)


def test_no_secret_ever_appears_on_the_command_line():
    curl = CurlSource("https://h/folder/x", user="u", password_file=Path("/s/pw"), cookie_file=Path("/s/c"))
    argv = nbdkit_argv(curl, SOCKET)
    assert "password=+/s/pw" in argv
    assert "cookie=+/s/c" in argv


def test_curl_for_the_lab_skips_certificate_verification_only_when_asked():
    assert "sslverify=false" in nbdkit_argv(CurlSource("https://h/d", sslverify=False), SOCKET)
    assert not any("sslverify" in a for a in nbdkit_argv(CurlSource("https://h/d"), SOCKET))


def test_file_export_is_read_only_by_default_and_may_exit_with_its_parent():
    argv = nbdkit_argv(FileSource(Path("/d/a.raw")), SOCKET, exit_with_parent=True)
    assert argv[-2:] == ["file", "file=/d/a.raw"]
    assert "--readonly" in argv
    assert "--exit-with-parent" in argv


def test_tcp_listener_binds_loopback_only():
    listen = Listen(port=10809)
    assert nbdkit_argv(FileSource(Path("/a")), listen)[2:6] == ["--ipaddr", "127.0.0.1", "--port", "10809"]
    assert listen.uri == "nbd://127.0.0.1:10809/"


def test_unix_socket_uri_is_what_libnbd_expects():
    assert SOCKET.uri == "nbd+unix:///?socket=/run/r/web-01-2000.sock"


def test_listen_needs_exactly_one_address():
    with pytest.raises(ValueError, match="exactly one"):
        Listen()
    with pytest.raises(ValueError, match="exactly one"):
        Listen(socket=Path("/s"), port=1)


def test_a_detached_server_daemonises_and_logs_to_stderr_instead_of_syslog():
    argv = nbdkit_argv(FileSource(Path("/a")), SOCKET, foreground=False)
    assert "--foreground" not in argv
    assert "--log=stderr" in argv


def test_a_disk_datastore_path_becomes_its_flat_file_url_on_the_datastore_http_access():
    source = CurlSource.for_datastore_disk(
        "https://vc.example.com/", "DC 1", "[ds 1] web-01/web-01_1.vmdk", sslverify=False
    )
    assert source.url == (
        "https://vc.example.com/folder/web-01/web-01_1-flat.vmdk?dcPath=DC+1&dsName=ds+1"
    )
    assert not source.sslverify


def test_a_datastore_path_that_names_no_disk_is_refused():
    with pytest.raises(ValueError, match="not a datastore path"):
        CurlSource.for_datastore_disk("https://vc", "DC0", "web-01/web-01.vmdk")
