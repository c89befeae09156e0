"""A digest of the desired state, so a saved plan can tell whether the policies changed under it.

Of the loaded model, not of the files' bytes: `fmt`, comments, moving a document to another file or
re-rendering a template to the same result change nothing that runs, so they must not refuse a plan;
a changed `vars` file or allow-listed environment variable that renders differently must. The model is
taken through `dump`'s documents, which round-trip to an equal `PolicySet` (so nothing that runs is
left out), and sorted by kind and name so document order does not count.
"""

from __future__ import annotations

import hashlib
import json

from reconciler.policy.dump import policy_documents
from reconciler.policy.model import PolicySet


def policy_digest(policy_set: PolicySet) -> str:
    documents = sorted(policy_documents(policy_set),
                       key=lambda d: (str(d.get("kind")), str(d.get("metadata", {}).get("name"))))
    canonical = json.dumps(documents, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
