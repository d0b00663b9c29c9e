#!/usr/bin/env python3
"""Check account registry drafts (kind: accounts) until `attache check` knows the kind.

usage: python3 drafts/accounts/check_accounts.py [FILE.yaml ...]   (default: drafts/accounts/*.yaml)

Fields and values as in the registry format; an error for two entries with the same
platform + handle (case-insensitive, across all files given) whose validity overlaps.
"""
import datetime
import glob
import re
import sys

import yaml

PLATFORMS = {"x", "mastodon", "bluesky", "facebook", "telegram", "website", "youtube", "instagram"}
ROLES = {"head_of_state", "head_of_government", "foreign_ministry", "minister", "spokesperson",
         "embassy", "mission_to_un", "state_media", "proxy", "other"}
TIERS = {"head_of_state", "foreign_ministry", "embassy", "state_media"}
KEYS = {"platform", "handle", "id", "country", "role", "tier", "name", "from", "until"}
FAR_PAST, FAR_FUTURE = datetime.date.min, datetime.date.max

files = sys.argv[1:] or sorted(glob.glob("drafts/accounts/*.yaml"))
errors, seen, total = [], {}, 0


def date(v, where):
    if v is None:
        return None
    if isinstance(v, datetime.date):
        return v
    try:
        return datetime.date.fromisoformat(str(v))
    except ValueError:
        errors.append(f"{where}: bad date {v!r} (YYYY-MM-DD)")


for f in files:
    doc = yaml.safe_load(open(f, encoding="utf-8"))
    if doc.get("kind") != "accounts" or not isinstance(doc.get("accounts"), list):
        errors.append(f"{f}: not a `kind: accounts` file with an `accounts` list")
        continue
    if not doc.get("description"):
        errors.append(f"{f}: missing description")
    for i, a in enumerate(doc["accounts"]):
        total += 1
        where = f"{f}: accounts[{i}] {a.get('handle') or a.get('id')}"
        for k in set(a) - KEYS:
            errors.append(f"{where}: unknown field {k}")
        if a.get("platform") not in PLATFORMS:
            errors.append(f"{where}: platform {a.get('platform')!r}")
        if not a.get("handle") and not a.get("id"):
            errors.append(f"{where}: handle or id required")
        if a.get("handle") and (str(a["handle"]).startswith("@") or not re.fullmatch(r"[\w.\-]+", str(a["handle"]))):
            errors.append(f"{where}: handle must be given without @ and without spaces")
        if "id" in a and not isinstance(a["id"], str):
            errors.append(f"{where}: id must be a string")
        if not re.fullmatch(r"[A-Z]{2}", str(a.get("country", ""))):
            errors.append(f"{where}: country {a.get('country')!r}")
        if a.get("role") not in ROLES:
            errors.append(f"{where}: role {a.get('role')!r}")
        if "tier" in a and a["tier"] not in TIERS:
            errors.append(f"{where}: tier {a['tier']!r}")
        if not a.get("name"):
            errors.append(f"{where}: name missing")
        lo, hi = date(a.get("from"), where), date(a.get("until"), where)
        if lo and hi and lo >= hi:
            errors.append(f"{where}: from {lo} is not before until {hi}")
        lo, hi = lo or FAR_PAST, hi or FAR_FUTURE
        keys = []
        if a.get("handle"):
            keys.append((a.get("platform"), "handle", str(a["handle"]).lower()))
        if a.get("id"):
            keys.append((a.get("platform"), "id", str(a["id"])))
        for key in keys:
            for (olo, ohi, owhere) in seen.get(key, []):
                if lo < ohi and olo < hi:
                    errors.append(f"{where}: duplicate of {owhere} ({key[0]} {key[1]} {key[2]}, overlapping validity)")
            seen.setdefault(key, []).append((lo, hi, where))

for e in errors:
    print(e)
print(f"{'FAILED' if errors else 'ok'}: {total} accounts in {len(files)} files, {len(errors)} error(s)")
sys.exit(1 if errors else 0)
