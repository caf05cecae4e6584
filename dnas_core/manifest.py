"""The YAML manifest: one root pydantic model, components chosen by ``type``.

The root model is built per plugin manager (:func:`manifest_model`), because the set
of valid ``type`` values is whatever plugins are installed. Every section is
``extra="forbid"``, so a misspelt key is an error naming its dotted path. YAML is only
ever read with a ``yaml.SafeLoader`` (one that also refuses duplicate keys): a manifest
cannot construct Python objects, and it can only name components that an installed
plugin registered.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .errors import ManifestError, UsageError, first_line
from .registry import Registries, format_validation_error
from .tune_config import TuneConfig

#: Manifest section -> registry kind (sections holding one component).
COMPONENT_SECTIONS = {
    "task": "task",
    "space": "space",
    "strategy": "strategy",
    "backend": "backend",
    "export": "exporter",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TrainConfig(_Section):
    """Retraining of the derived network from scratch."""

    epochs: int = Field(30, ge=0, description="Epochs of retraining (0 skips it).")
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(3e-4, ge=0)
    grad_clip: Optional[float] = Field(5.0, gt=0, description="Max gradient norm; null disables clipping.")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    eval_every: int = Field(1, ge=1, description="Evaluate on the validation split every N epochs.")
    include_val: bool = Field(
        True,
        description="Retrain on train+val (the search used val for the architecture); "
        "false keeps val apart and reports val metrics per epoch.",
    )
    divergence: Literal["fail", "skip_step", "reduce_lr"] = Field(
        "fail",
        description="What a NaN/inf loss or gradient does, in retraining and in the search loop: end the run "
        "with a clear error (fail), skip that step (skip_step), or skip it and multiply the learning rates "
        "by divergence_lr_factor (reduce_lr).",
    )
    divergence_lr_factor: float = Field(0.5, gt=0, lt=1, description="LR multiplier of the reduce_lr policy.")
    divergence_max_skips: int = Field(
        20, ge=1, description="Consecutive non-finite steps tolerated by skip_step/reduce_lr before the run fails."
    )


class ConstraintsConfig(_Section):
    """Hardware and size constraints honoured by every strategy that supports them."""

    max_latency_ms: Optional[float] = Field(None, gt=0, description="predicted latency limit (latency table)")
    max_params: Optional[int] = Field(None, gt=0)
    max_flops: Optional[float] = Field(None, gt=0, description="FLOPs of one example (2 per multiply-add)")
    latency_backend: Optional[dict[str, Any]] = Field(
        None, description="backend section (type + settings) that measures the latency table; default: the run's"
    )
    latency_batch_size: int = Field(1, ge=1, description="batch size the latency is measured at")
    latency_repeats: int = Field(30, ge=1, description="timed calls per operator and round of the latency table")
    latency_fit_networks: int = Field(16, ge=0, description="whole networks measured to fit the latency table")


class OutputConfig(_Section):
    root: str = Field("runs", description="Folder under which run directories are created.")
    checkpoint_every: int = Field(1, ge=1, description="Save a checkpoint every N epochs.")
    onnx_check_samples: int = Field(256, ge=1, description="Test inputs used to verify the export.")


class ManifestBase(_Section):
    """Fields every manifest has besides the component sections."""

    version: Literal[1] = 1
    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Run name (part of the run folder).")
    seed: int = Field(0, ge=0)
    train: TrainConfig = Field(default_factory=TrainConfig)
    constraints: ConstraintsConfig = Field(default_factory=ConstraintsConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    extends_runs: list[str] = Field(
        default_factory=list, description="Earlier run directories whose results a transfer-aware strategy may use."
    )
    tune: Optional[TuneConfig] = Field(
        None, description="Hyperparameters, objectives, sampler and pruner of `dnas tune` (ignored by `dnas run`)."
    )


def _union(models: list[type[BaseModel]]) -> Any:
    if not models:
        return None
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="type")]  # type: ignore[return-value]


def manifest_model(registries: Registries) -> type[ManifestBase]:
    """The root model for the components installed in ``registries``."""
    fields: dict[str, Any] = {}
    for section, kind in COMPONENT_SECTIONS.items():
        models = [e.config_model for e in registries[kind].entries()]
        ann = _union(models)
        if ann is None:
            fields[section] = (Optional[dict], None)
        elif section in ("task", "space", "strategy"):
            fields[section] = (ann, ...)
        else:
            fields[section] = (Optional[ann], None)
    cb = _union([e.config_model for e in registries.callbacks.entries()])
    fields["callbacks"] = (list[cb] if cb is not None else list[dict], Field(default_factory=list))  # type: ignore[valid-type]
    return create_model("Manifest", __base__=ManifestBase, **fields)  # type: ignore[call-overload]


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping: plain YAML
    keeps the last one silently, so a second ``strategy:`` further down a manifest
    would replace the first without a word."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: the base class merges it
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first.line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{p}: is a folder; a manifest is a YAML file (a run folder's is {p / 'manifest.yaml'})")
    if not p.is_file():
        raise UsageError(f"{p}: manifest file not found")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ManifestError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", source=str(p)) from None
    except UnicodeDecodeError:
        raise ManifestError("not a UTF-8 text file", source=str(p)) from None
    if not isinstance(data, dict):
        raise ManifestError("a manifest must be a YAML mapping at the top level", source=str(p))
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML scalars/lists."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"override {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        parts = [k for k in key.strip().split(".") if k]
        if not parts:
            raise UsageError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and raw.strip()[:1] not in ("'", '"'):
            value = _number(value)
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = node[_index(part, item, node)]
                continue
            if part not in node or node[part] is None:
                node[part] = {}
            if not isinstance(node[part], (dict, list)):
                raise UsageError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = node[part]
        last = parts[-1]
        if isinstance(node, list):
            node[_index(last, item, node)] = value
        else:
            node[last] = value
    return out


def _number(text: str) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; a user writing it means a number."""
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return text


def _index(part: str, item: str, seq: list[Any]) -> int:
    try:
        i = int(part)
    except ValueError:
        raise UsageError(f"override {item!r}: {part!r} is not a list index") from None
    if not -len(seq) <= i < len(seq):
        raise UsageError(f"override {item!r}: index {i} is out of range (the list has {len(seq)} item(s))")
    return i


def _check_component_names(data: dict[str, Any], registries: Registries, source: str | None) -> None:
    """Unknown ``type`` values get a did-you-mean message instead of pydantic's."""
    def check(section: str, kind: str, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            raise ManifestError(f"{section}: must be a mapping with a 'type' key", source=source)
        if "type" not in value:
            known = ", ".join(registries[kind].list()) or "none installed"
            raise ManifestError(f"{section}.type: missing (choose one of: {known})", source=source)
        name = value["type"]
        if not isinstance(name, str):
            raise ManifestError(f"{section}.type: must be a component name, not a {type(name).__name__}", source=source)
        if name not in registries[kind]:
            msg = registries[kind]._unknown_message(str(name))
            raise ManifestError(f"{section}.type: {msg}", source=source)

    for section, kind in COMPONENT_SECTIONS.items():
        check(section, kind, data.get(section))
    cbs = data.get("callbacks") or []
    if isinstance(cbs, list):
        for i, cb in enumerate(cbs):
            check(f"callbacks.{i}", "callback", cb)


def validate_manifest(data: dict[str, Any], registries: Registries, source: str | None = None) -> ManifestBase:
    model = manifest_model(registries)
    odd = [k for k in data if not isinstance(k, str)]
    if odd:
        raise ManifestError(f"top-level keys must be names, got {odd[0]!r}", source=source)
    unknown = set(data) - set(model.model_fields)
    if unknown:
        key = sorted(unknown)[0]
        close = difflib.get_close_matches(key, list(model.model_fields), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; the fields are {', '.join(model.model_fields)}"
        raise ManifestError(f"{key}: unknown top-level field{hint}", source=source)
    _check_component_names(data, registries, source)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(format_validation_error(exc, strip=_discriminator_locs(data)), source=source) from None


def _discriminator_locs(data: dict[str, Any]) -> set[tuple[Any, ...]]:
    """Locations where pydantic inserts the ``type`` tag (``strategy.darts.epochs``);
    the user wrote ``strategy.epochs``, so errors show that."""
    out = set()
    for section in COMPONENT_SECTIONS:
        value = data.get(section)
        if isinstance(value, dict) and "type" in value:
            out.add((section, str(value["type"])))
    cbs = data.get("callbacks")
    for i, cb in enumerate(cbs if isinstance(cbs, list) else []):
        if isinstance(cb, dict) and "type" in cb:
            out.add(("callbacks", i, str(cb["type"])))
    return out


def load_manifest(path: str | Path, registries: Registries, overrides: list[str] | None = None) -> ManifestBase:
    data = apply_overrides(read_yaml(path), overrides or [])
    return validate_manifest(data, registries, source=str(path))


def resolve_defaults(manifest: ManifestBase, registries: Registries) -> ManifestBase:
    """Fill the optional component sections the manifest left out (backend, export)
    with the best available installed component, so the saved manifest is explicit."""
    updates: dict[str, Any] = {}
    if manifest.backend is None:  # type: ignore[attr-defined]
        chosen = _auto_component(registries.backends.entries(), "backend", lambda cls: cls.trains and cls.is_available())
        if chosen is not None:
            updates["backend"] = chosen
    # `export: null` written in the manifest means "no export"; only a missing section
    # gets the default exporter
    if manifest.export is None and "export" not in manifest.model_fields_set:  # type: ignore[attr-defined]
        chosen = _auto_component(registries.exporters.entries(), "export", lambda cls: True)
        if chosen is not None:
            updates["export"] = chosen
    return manifest.model_copy(update=updates) if updates else manifest


def _auto_component(entries: list[Any], section: str, usable: Any) -> BaseModel | None:
    """The default config of the highest-priority usable component, or None. A plugin
    whose availability check raises, or whose config cannot be built from defaults (a
    required field), is passed over with a warning naming it, so one broken plugin does
    not stop runs that never asked for it."""
    import warnings

    for entry in sorted(entries, key=lambda e: e.cls.auto_priority, reverse=True):
        try:
            if not usable(entry.cls):
                continue
            return entry.config_model(type=entry.name)
        except Exception as exc:  # noqa: BLE001 - reported with the plugin named, then skipped
            first = first_line(exc, type(exc).__name__)
            warnings.warn(f"{section}: skipped {entry.name!r} (plugin {entry.plugin!r}, {entry.distribution}) as the "
                          f"automatic choice: {type(exc).__name__}: {first}; name a {section} in the manifest to "
                          "choose one", stacklevel=3)
    return None


def dump_manifest(manifest: ManifestBase) -> str:
    data = manifest.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)


def component_config(section_value: BaseModel) -> dict[str, Any]:
    """A component section without its ``type`` key."""
    data = section_value.model_dump()
    data.pop("type", None)
    return data
