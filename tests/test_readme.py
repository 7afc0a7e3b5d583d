"""The README's two set-up commands stay in sync with CI and with the files they use."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def fenced_commands() -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S)]


def test_ci_runs_the_readme_test_command():
    test_command = next(c for c in fenced_commands() if "pytest" in c and "pip install" in c)
    ci = (REPO / ".ci" / "run").read_text()
    assert test_command in ci.splitlines(), ".ci/run must run the README's test command word for word"


def test_main_job_uses_existing_bundle_configs():
    main_job = next(c for c in fenced_commands() if "monai.bundle run training" in c and "pip install" in c)
    configs = re.findall(r"bundles/[\w/.]+\.json", main_job)
    assert configs, "the main job must run a bundle config"
    for config in configs:
        assert (REPO / config).is_file(), f"{config} named in the README does not exist"
    assert "constraints.txt" in shlex.split(main_job.replace("&&", " "))


def test_documentation_links_resolve():
    for link in re.findall(r"\]\(((?:docs|bundles)/[^)#]+)\)", README):
        assert (REPO / link).exists(), f"README links to {link}, which does not exist"
