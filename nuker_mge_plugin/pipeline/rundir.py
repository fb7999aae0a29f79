"""The output folder of one fit: where each of its files lives, and how far the run got.

One object owns the layout that the fit writes (``run_fit``), the survey reads back to decide what
to run (``galaxy_state``, ``fit_galaxy``) and ``nuker-mge demo`` resumes from. The products and
figures that ``write_results`` / ``write_products`` add are named in those functions' Returns.
"""

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunDir"]


@dataclass(frozen=True)
class RunDir:
    """The folder ``path`` of one fit.

    Attributes
    ----------
    path : pathlib.Path
        The folder (``output.dir``, ``nuker-mge fit --out``, a survey galaxy's folder).
    """

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def map_json(self):
        """The MAP and its start, written before sampling (a resume reads it back)."""
        return self.path / "map.json"

    @property
    def chains(self):
        """The sampler's checkpoint folder (``sampling.backend.ChainStore``)."""
        return self.path / "chains"

    @property
    def summary_json(self):
        """The fit's summary, written last: its presence means the fit finished."""
        return self.path / "summary.json"

    @property
    def posterior_nc(self):
        """The posterior draws and sample statistics (ArviZ netCDF)."""
        return self.path / "posterior.nc"

    @property
    def config_toml(self):
        """The resolved configuration the fit ran with."""
        return self.path / "config.toml"

    @property
    def fit_log(self):
        """A survey fit's log (every line ``run_fit`` logs)."""
        return self.path / "fit.log"

    @property
    def attempts_jsonl(self):
        """A survey fit's attempts, one JSON record per start, error and end."""
        return self.path / "attempts.jsonl"

    @property
    def started(self):
        """True when a run can resume here: its MAP or its checkpoints exist."""
        return self.map_json.is_file() or self.chains.is_dir()

    def state(self):
        """``"done"`` (the summary exists), ``"resume"`` (:attr:`started`) or ``"new"``."""
        if self.summary_json.is_file():
            return "done"
        return "resume" if self.started else "new"
