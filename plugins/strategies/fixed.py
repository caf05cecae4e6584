"""``fixed``: no search; the run trains one given architecture.

The architecture is, in order of precedence,

* ``genotype`` in the strategy config: a JSON spec of the space (a mapping or list),
  a genotype JSON object (``{"space": ..., "spec": ...}``, as in a run's
  ``genotype.json``), the space's text form (e.g. a NAS-Bench-201 arch string), or
  the path of a ``genotype.json`` file;
* otherwise the space's hand-designed baseline (:meth:`SearchSpace.baseline`).

So ``strategy: {type: fixed}`` on a baseline-capable space (tabular, recsys) trains
the reference model with the same trainer, budget and metrics as a searched one, and
a space whose only architecture is a baseline (``space: {type: neumf}``) needs
nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import Field

from dnas_core import ComponentConfig, Genotype, SearchOutcome, Strategy, UsageError, hookimpl
from dnas_core.genotype import _freeze


class FixedConfig(ComponentConfig):
    genotype: Optional[Union[str, dict[str, Any], list[Any]]] = Field(
        None,
        description="the architecture to train: a JSON spec, a genotype JSON object, the space's text form, "
        "or a genotype.json path; null uses the space's hand-designed baseline",
    )


class Fixed(Strategy):
    """No search: returns the configured genotype or the space's baseline."""

    name = "fixed"
    description = "no search: train a given genotype or the space's hand-designed baseline"
    Config = FixedConfig

    def resolve(self, space: Any, task: Any) -> tuple[Genotype, str]:
        """The genotype to train and where it came from (``baseline`` / ``config``)."""
        value = self.config.genotype
        if value is None:
            return space.baseline(task), "baseline"
        try:
            genotype = self._from_value(value, space)
            # Round-trip through the graph encoding: validates the spec against the
            # space and fills in the canonical text form.
            genotype = space.decode(space.encode(genotype))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise UsageError(f"strategy.genotype: not an architecture of space {space.name!r}: {exc}") from None
        return genotype, "config"

    @staticmethod
    def _from_value(value: Any, space: Any) -> Genotype:
        if isinstance(value, dict) and "space" in value and "spec" in value:
            genotype = Genotype.from_json(value)
        elif isinstance(value, str):
            path = Path(value).expanduser()
            if value.endswith(".json") and path.is_file():
                try:
                    genotype = Genotype.from_json(json.loads(path.read_text(encoding="utf-8")))
                except json.JSONDecodeError as exc:
                    raise UsageError(f"strategy.genotype: {path} is not valid JSON: {exc}") from None
            else:
                return space.from_string(value)
        else:
            genotype = Genotype(space.name, _freeze(value))
        if genotype.space != space.name:
            raise UsageError(
                f"strategy.genotype: the genotype belongs to space {genotype.space!r}, the manifest's space is {space.name!r}"
            )
        return genotype

    def preflight(self, run) -> None:
        run.space.check_genotype(self.resolve(run.space, run.task)[0])

    def search(self, run) -> SearchOutcome:
        genotype, source = self.resolve(run.space, run.task)
        run.space.check_genotype(genotype)
        return SearchOutcome(genotype=genotype, summary={"strategy": "fixed", "source": source,
                                                         "genotype": run.space.format(genotype)})


@hookimpl
def dnas_register_strategies():
    return [Fixed]
