"""`captioner push PACKAGE org/name`: upload a model package to the Hugging Face Hub with a model card."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from captioner.cli.common import Parser, fail
from captioner.package import PACKAGE_FILES, README_FILE, REQUIRED_FILES, check_inside


def push(argv: list[str]) -> int:
    parser = Parser(
        prog="captioner push",
        description="Upload a model package to the Hugging Face Hub: its files, with README.md replaced by a model "
        "card (library, task, metrics from --report, how to use it, how it was trained). Log in first with "
        "`hf auth login` or set HF_TOKEN.",
    )
    parser.add_argument("package", help=f"model package folder ({', '.join(REQUIRED_FILES)})")
    parser.add_argument("repo_id", help="the Hub repo to create or update: org/name")
    parser.add_argument("--private", action="store_true", help="create the repo private (an existing one is kept)")
    parser.add_argument("--revision", help="push to this branch (created from main when missing)")
    parser.add_argument("--report", help="an `captioner evaluate --report` JSON: its metrics go into the card")
    parser.add_argument("--license", help="license id for the card's metadata, e.g. mit or apache-2.0")
    parser.add_argument("--commit-message", default=None, help="default: 'Upload captioner model package'")
    parser.add_argument(
        "--dry-run", action="store_true", help="upload nothing: list the files on stderr and print the model card"
    )
    args = parser.parse_args(argv)
    from captioner.card import model_card
    from captioner.hub import is_repo_id

    package = Path(args.package)
    missing = [n for n in REQUIRED_FILES if not (package / n).is_file()]
    if missing:
        return fail(f"{package} is not a captioner model package: {missing[0]} is missing")
    try:  # a link to a file elsewhere on this machine (~/.ssh/id_rsa as training.json) is never uploaded
        check_inside(package, PACKAGE_FILES)
    except ValueError as err:
        return fail(err)
    if "/" not in args.repo_id or not is_repo_id(args.repo_id):
        return fail(f"{args.repo_id!r} is not a Hub repo id; give org/name (your user name or an organisation)")
    report = None
    if args.report:
        try:
            report = json.loads(Path(args.report).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            return fail(f"--report {args.report}: {err}; pass the file `captioner evaluate --report` wrote")
        if not isinstance(report, dict) or not isinstance(report.get("metrics"), dict):
            return fail(f"--report {args.report}: no metrics; pass the file `captioner evaluate --report` wrote")
    card = model_card(package, args.repo_id, report, args.license)
    files = [n for n in PACKAGE_FILES if (package / n).is_file() and n != README_FILE]
    where = f"{args.repo_id}" + (f"@{args.revision}" if args.revision else "")
    if args.dry_run:
        print(f"would upload to {where}" + (" (private)" if args.private else ""), file=sys.stderr)
        for name in [*files, README_FILE]:
            size = (package / name).stat().st_size if name != README_FILE else len(card.encode())
            print(
                f"  {name}  {size:,} bytes" + ("  (the model card below)" if name == README_FILE else ""),
                file=sys.stderr,
            )
        print(card)
        return 0
    return _upload(package, files, card, args, where)


def _upload(package: Path, files: list[str], card: str, args, where: str) -> int:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    api = HfApi()
    try:
        url = api.create_repo(args.repo_id, private=args.private, exist_ok=True)
        if args.revision:
            api.create_branch(args.repo_id, branch=args.revision, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="captioner-push-") as tmp:  # the package as it will be on the Hub
            for name in files:
                shutil.copy2(package / name, Path(tmp) / name)
            (Path(tmp) / README_FILE).write_text(card, encoding="utf-8")
            commit = api.upload_folder(
                repo_id=args.repo_id,
                folder_path=tmp,
                revision=args.revision,
                commit_message=args.commit_message or "Upload captioner model package",
            )
    except LocalTokenNotFoundError:
        return fail("not logged in to the Hub: run `hf auth login` or set HF_TOKEN")
    except HfHubHTTPError as err:
        return fail(f"{where}: the Hub answered {' '.join(str(err).split())[:200]}")
    print(
        f"pushed {package} to {url} ({commit.oid[:12]}); use it: captioner caption {args.repo_id} IMAGE",
        file=sys.stderr,
    )
    return 0
