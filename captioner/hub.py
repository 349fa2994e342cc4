"""Model packages on the Hugging Face Hub: a repo id wherever a package folder is taken.

A name that is an existing folder is used as it is; any other name of the Hub's `org/name` form is fetched with
`huggingface_hub.snapshot_download` (its cache, `--revision`, the token from `HF_TOKEN` or `hf auth login`,
`HF_HUB_OFFLINE=1` to use the cache only), and only the package's files, never the rest of a repo. Where no
`--revision` option exists (`model.init_from` in a config) `org/name@revision` names one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from captioner.package import PACKAGE_FILES, Origin

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")


class HubError(OSError):
    """The Hub could not give the package: a missing repo, revision or file, no network, a gated repo."""


def is_repo_id(name: str) -> bool:
    """`org/name` or `name` as the Hub spells repo ids; a folder that exists here is never one."""
    return bool(REPO_ID.match(name)) and ".." not in name and not Path(name).exists()


class Located(NamedTuple):
    """A model package found: the local `folder` to read, and where it came from (`origin`, for training.json)."""

    folder: Path
    origin: Origin


def resolve_package(name_or_path: str | Path, revision: str | None = None) -> Path:
    """The local folder of a model package: `name_or_path` itself when it is a folder here, else the Hub repo's
    package files, downloaded (or found in the cache) at `revision`. HubError says what went wrong in a line."""
    return locate_package(name_or_path, revision).folder


def locate_package(name_or_path: str | Path, revision: str | None = None) -> Located:
    """`resolve_package`, with where the package came from: a folder here (a Hugging Face cache snapshot given as a
    folder is its repo at that commit), or the Hub repo at the revision asked for and the commit downloaded."""
    path = Path(name_or_path)
    name, _, at = str(name_or_path).partition("@")
    if not path.exists() and at and is_repo_id(name):  # org/name@revision
        if revision is not None and revision != at:
            raise ValueError(f"{name_or_path} names revision {at!r} but revision={revision!r} is given; give one")
        revision = at
    else:
        name = str(name_or_path)
    if path.exists() or not is_repo_id(name):
        if revision is not None:
            what = "a local folder" if path.exists() else "neither a folder here nor a Hub repo id (org/name)"
            raise ValueError(f"revision={revision!r}: {name_or_path} is {what}")
        return Located(path, Origin.of(path))
    return download(name, revision)


def download(repo_id: str, revision: str | None, patterns: tuple[str, ...] = PACKAGE_FILES) -> Located:
    """The files of Hub repo `repo_id` matching `patterns` (a package's, by default) in the local cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import DEFAULT_REVISION
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f"{repo_id}@{revision}" if revision else repo_id
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=list(patterns))
    except RevisionNotFoundError as err:
        raise HubError(
            f"{at}: the Hub repo has no revision {revision!r}; pass an existing branch, tag or commit"
        ) from err
    except GatedRepoError as err:
        raise HubError(f"{at}: the Hub repo is gated; accept its terms on the Hub and log in (hf auth login)") from err
    except RepositoryNotFoundError as err:
        raise HubError(
            f"{repo_id}: no such folder here, and no Hub repo of that name you can read (check the name; for a "
            "private repo log in with `hf auth login` or set HF_TOKEN)"
        ) from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise HubError(
            f"{at}: not in the Hub cache and the Hub cannot be reached (no network, or HF_HUB_OFFLINE is set); "
            "connect once to download it, or pass a local folder"
        ) from err
    except HfHubHTTPError as err:
        raise HubError(f"{at}: the Hub answered {' '.join(str(err).split())[:200]}") from err
    origin = Origin(repo_id=repo_id, revision=revision or DEFAULT_REVISION, commit=Path(folder).name)
    return Located(Path(folder), origin)  # the snapshot folder is named by its commit
