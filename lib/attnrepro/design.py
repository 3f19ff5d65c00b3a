"""What a preset declares about how its runs are judged, before any of them exists: the ``analysis`` section of a
preset YAML (``notebooks/presets/<preset>.yaml``).

```yaml
analysis:
  alpha: 0.05                  # family-wise level
  correction: holm             # holm (default), bonferroni, bh (Benjamini-Hochberg: the false discovery rate), none
  delta: 0.5                   # the smallest effect of interest, percentage points of top-1 (equivalence margin)
  delta_why: ...               # why that size (required with delta)
  family:                      # the comparisons judged together; default: every variant against its ablation's
    - "baseline: expatt vs none"   #   reference and every accuracy claim's comparison (the same runs count once)
  stands_for: {dataset: imagenet}  # what the preset's data is, for the claims' settings (imagefolder -> imagenet)
  note: ...                    # e.g. when the section was written (shown in the report)
```

The pipeline checks the section when it loads a preset (:func:`analysis_spec`, so a typo exits with code 2 before
anything trains); the analysis half uses it (:mod:`attnrepro.analysis.comparisons`). Nothing here is statistics.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .config import ConfigError

__all__ = ["Comparison", "AnalysisSpec", "analysis_spec", "parse_comparison", "CORRECTIONS", "ANALYSIS_KEYS"]

CORRECTIONS = ("holm", "bonferroni", "bh", "none")
ANALYSIS_KEYS = ("alpha", "correction", "delta", "delta_why", "family", "stands_for", "note")
STANDS_FOR_KEYS = ("dataset",)
_CMP_RE = re.compile(r"^\s*(?P<ablation>[^:\s]+)\s*:\s*(?P<variant>\S+)\s+vs\s+(?P<reference>\S+)\s*$")


@dataclass(frozen=True)
class Comparison:
    """``variant`` minus ``reference``, two variants of one ablation."""

    ablation: str
    variant: str
    reference: str

    @property
    def label(self) -> str:
        return f"{self.ablation}: {self.variant} vs {self.reference}"

    def reversed(self) -> "Comparison":
        return Comparison(self.ablation, self.reference, self.variant)


def parse_comparison(item: Any, where: str = "family") -> Comparison:
    """``"ablation: variant vs reference"`` or ``{ablation, variant, reference}`` -> :class:`Comparison`."""
    if isinstance(item, str):
        m = _CMP_RE.match(item)
        if m:
            return Comparison(m["ablation"], m["variant"], m["reference"])
    elif isinstance(item, Mapping) and set(item) == {"ablation", "variant", "reference"}:
        return Comparison(str(item["ablation"]), str(item["variant"]), str(item["reference"]))
    raise ConfigError(f"{where}: {item!r} is not a comparison; write 'ABLATION: VARIANT vs REFERENCE', e.g. "
                      "'baseline: se vs none'")


@dataclass(frozen=True)
class AnalysisSpec:
    """The parsed ``analysis`` section (defaults where it is silent)."""

    alpha: float = 0.05
    correction: str = "holm"
    delta: float | None = None
    delta_why: str | None = None
    family: tuple[Comparison, ...] | None = None
    stands_for: Mapping[str, str] = field(default_factory=dict)
    note: str | None = None

    @property
    def declared(self) -> bool:
        """Whether the preset declares its family (else the default family applies)."""
        return self.family is not None


def analysis_spec(section: Any, where: str = "preset: analysis") -> AnalysisSpec:
    """Check and parse a preset's ``analysis`` section (None: every default). Raises :class:`ConfigError` naming the
    bad entry and the valid ones."""
    if section is None:
        return AnalysisSpec()
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: expected a mapping with entries {', '.join(ANALYSIS_KEYS)}; got {section!r}")
    bad = sorted(set(section) - set(ANALYSIS_KEYS))
    if bad:
        raise ConfigError(f"{where}: unknown entry {bad[0]!r}; valid entries: {', '.join(ANALYSIS_KEYS)}")
    alpha = section.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ConfigError(f"{where}: alpha={alpha!r} is not valid; it must lie in (0, 1), e.g. 0.05")
    corr = section.get("correction", "holm")
    if corr not in CORRECTIONS:
        raise ConfigError(f"{where}: correction={corr!r} is not valid; choose one of: {', '.join(CORRECTIONS)}")
    delta = section.get("delta")
    if delta is not None:
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not math.isfinite(delta) or delta <= 0:
            raise ConfigError(f"{where}: delta={delta!r} is not valid; the smallest effect of interest is a number "
                              "of percentage points > 0")
        if not str(section.get("delta_why") or "").strip():
            raise ConfigError(f"{where}: delta={delta!r} needs delta_why, the reason for that size")
    family = section.get("family")
    if family is not None:
        if not isinstance(family, list) or not family:
            raise ConfigError(f"{where}: family must be a non-empty list of 'ABLATION: VARIANT vs REFERENCE'")
        family = tuple(parse_comparison(x, f"{where}: family") for x in family)
        seen: dict[frozenset, str] = {}
        for c in family:
            key = frozenset({(c.variant, c.reference)}) | frozenset({(c.reference, c.variant)})
            if (c.ablation, key) in seen:
                raise ConfigError(f"{where}: family lists {c.label!r} twice (as {seen[(c.ablation, key)]!r})")
            if c.variant == c.reference:
                raise ConfigError(f"{where}: family entry {c.label!r} compares a variant with itself")
            seen[(c.ablation, key)] = c.label
    stands = section.get("stands_for") or {}
    if not isinstance(stands, Mapping) or set(stands) - set(STANDS_FOR_KEYS):
        raise ConfigError(f"{where}: stands_for={stands!r} is not valid; it maps {', '.join(STANDS_FOR_KEYS)} to "
                          "what the preset's data is, e.g. {dataset: imagenet}")
    return AnalysisSpec(float(alpha), str(corr), None if delta is None else float(delta),
                        None if section.get("delta_why") is None else " ".join(str(section["delta_why"]).split()),
                        family, {str(k): str(v) for k, v in stands.items()},
                        None if section.get("note") is None else " ".join(str(section["note"]).split()))
