"""`python scripts/recipe_cost.py`: see experiments/recipe_cost.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: experiments/ lives there

from experiments.recipe_cost import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
