"""The decision (pure): evidence in, a :class:`Classification` out.

The framework with the most *model-building* evidence (Sequential/Model/layers,
compile/fit on a keras model, sklearn estimators) wins; only when no framework has any
does the total of the weaker evidence (imports, helper calls, requirements) decide. So
a Keras CNN that uses ``train_test_split`` and ``sklearn.metrics`` is keras.
``framework:`` in ``mlchain.yaml`` overrides everything. A decision is *close* when the
runner-up's deciding score is at least :data:`CLOSE_RATIO` of the winner's; the
explanation then says so, and how to override it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, cast

from mlchain.contract import CONFIG_FILE, FRAMEWORKS, Framework
from mlchain.detect.evidence import Reason, evidence_in, requirement_reasons
from mlchain.detect.parsing import ParsedSource, SkippedFile
from mlchain.detect.requirements import Requirement
from mlchain.detect.rules import (
    FAMILY,
    KERAS2,
    KERAS2_API,
    MODEL_BUILDING,
    OVERRIDE,
    PIN_BELOW_KERAS3,
    REQUIREMENT,
    WEAKER_EVIDENCE,
)
from mlchain.errors import ClassifyError, ConfigError

# A decision is close when the runner-up's deciding score is at least this share of the winner's.
CLOSE_RATIO = 0.8
# The frameworks scored against each other; keras2 is Keras scored as keras, then told apart
# by its markers (APIs Keras 3 removed, pins below Keras 3).
SCORED = tuple(fw for fw in FRAMEWORKS if fw not in FAMILY)


def family(framework: str) -> str:
    return FAMILY.get(framework, framework)


@dataclass(frozen=True)
class Classification:
    """The decision, why (every reason names file, line, evidence, kind and weight), the
    scores per framework, and what could not be read or parsed."""

    framework: Framework
    decided_by: str  # OVERRIDE | MODEL_BUILDING | WEAKER_EVIDENCE
    reasons: tuple[Reason, ...]  # the chosen framework's first, strongest first
    scores: dict[str, float]  # total weight per framework, highest first
    model_building: dict[str, float]  # model-building weight per framework, highest first
    skipped: tuple[SkippedFile, ...] = ()
    files_scanned: int = 0
    files_parsed: int = 0
    runner_up: str | None = None  # the next framework by the rule that decided (None: no other has any)
    close: bool = False  # the runner-up came within CLOSE_RATIO of the winner

    @property
    def overridden(self) -> bool:
        return self.decided_by == OVERRIDE

    @property
    def keras2_markers(self) -> tuple[Reason, ...]:
        """Why this is Keras 2 code: the APIs Keras 3 removed and the pins below Keras 3 found."""
        return tuple(r for r in self.reasons if r.kind == KERAS2_API)

    def override_hint(self) -> str:
        """What to put in mlchain.yaml to decide otherwise."""
        if self.runner_up in FRAMEWORKS:
            others = [self.runner_up]
        else:
            # another family (keras2 vs keras is said where the Keras version is explained)
            others = [fw for fw in SCORED if fw != family(self.framework)]
        choices = " or ".join(f"`framework: {fw}`" for fw in others)
        return f"if this is wrong, put {choices} in {CONFIG_FILE}"

    def to_dict(self, max_reasons: int | None = 200) -> dict[str, Any]:
        shown = self.reasons if max_reasons is None else self.reasons[:max_reasons]
        return {
            "framework": self.framework,
            "decided_by": self.decided_by,
            "overridden": self.overridden,
            "close": self.close,
            "runner_up": self.runner_up,
            "scores": dict(self.scores),
            "model_building": dict(self.model_building),
            "reasons": [r.to_dict() for r in shown],
            "reasons_total": len(self.reasons),
            "skipped": [s.to_dict() for s in self.skipped],
            "files_scanned": self.files_scanned,
            "files_parsed": self.files_parsed,
        }

    def explain(self, max_reasons: int = 12) -> str:
        how = {
            OVERRIDE: f"set by framework: in {CONFIG_FILE}",
            MODEL_BUILDING: "decided by the code that builds the model",
            WEAKER_EVIDENCE: "no model-building code found; decided by imports, calls and requirements",
        }.get(self.decided_by, self.decided_by)
        lines = [f"framework: {self.framework} ({how})"]
        if self.decided_by == MODEL_BUILDING:
            lines.append(f"model-building scores: {_listed(self.model_building)}")
        lines.append(f"scores: {_listed(self.scores)}")
        if self.close and self.runner_up is not None:
            deciding = self.model_building if self.decided_by == MODEL_BUILDING else self.scores
            lines.append(f"close decision: {self.framework} {deciding[family(self.framework)]:g} vs {self.runner_up} "
                         f"{deciding[self.runner_up]:g} (within {1 - CLOSE_RATIO:.0%})")
        if not self.overridden:
            lines.append(self.override_hint())
        lines.extend(self._keras_version_lines())
        mine = [r for r in self.reasons if family(r.framework) == family(self.framework)]
        other = [r for r in self.reasons if family(r.framework) != family(self.framework)]
        for title, group in ((f"evidence for {self.framework}:", mine), ("other evidence:", other)):
            if not group:
                continue
            lines.append(title)
            lines.extend(f"  {r.where:<28} {r.kind:<15} {'+' + format(r.weight, 'g'):<4} {r.evidence}"
                         + ("" if family(r.framework) == family(self.framework) else f"  [{r.framework}]")
                         for r in group[:max_reasons])
            if len(group) > max_reasons:
                lines.append(f"  ... and {len(group) - max_reasons} more")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s) or cell(s) that could not be read or parsed:")
            lines.extend(f"  {s}" for s in self.skipped[:max_reasons])
            if len(self.skipped) > max_reasons:
                lines.append(f"  ... and {len(self.skipped) - max_reasons} more")
        lines.append(f"scanned {self.files_scanned} Python file(s) and notebook(s), "
                     f"parsed {self.files_parsed} that mention a framework module")
        return "\n".join(lines)


    def _keras_version_lines(self) -> list[str]:
        """Why Keras 2 (the markers, each with its line) or Keras 3, when the classifier chose."""
        if self.overridden or family(self.framework) != family(KERAS2):
            return []
        first: dict[str, Reason] = {}  # each API once, where it first appears
        for r in sorted(self.keras2_markers, key=_POSITION):
            said = r.evidence.rpartition(": ")[2]
            first.setdefault(f"{r.file}:{r.symbol}" if said == PIN_BELOW_KERAS3 else said, r)
        markers = list(first.values())
        if self.framework == KERAS2:
            return [(f"Keras 2 code, so the keras2 image (TensorFlow 2.15 with Keras 2); `framework: keras` in "
                     f"{CONFIG_FILE} would use the Keras 3 image instead. Found:"),
                    *(f"  {r.where:<28} {r.evidence}" for r in markers[:6]),
                    *([f"  ... and {len(markers) - 6} more"] if len(markers) > 6 else [])]
        return ["Keras 3 code (the keras image): no API that Keras 3 removed and no pin below Keras 3"]


def _listed(scores: dict[str, float]) -> str:
    return ", ".join(f"{fw} {score:g}" for fw, score in scores.items())


def decide(sources: Sequence[ParsedSource], requirements: Sequence[Requirement] = (),
           override: str | None = None, *, override_file: str = CONFIG_FILE, override_line: int = 0,
           skipped: Sequence[SkippedFile] = (), files_scanned: int | None = None,
           files_parsed: int | None = None) -> Classification:
    """Decide the framework from parsed sources and requirements; no I/O.

    ``files_scanned`` counts every Python file and notebook found, including the ones
    not handed over as sources (default: ``len(sources)``). Raises ClassifyError when
    nothing supported is found (no Python, nothing recognised, or an unsupported framework).
    """
    reasons: list[Reason] = []
    for source in sources:
        reasons.extend(evidence_in(source))
    reasons.extend(requirement_reasons(requirements))
    return weigh(reasons, override, override_file=override_file, override_line=override_line,
                 skipped=skipped, files_scanned=len(sources) if files_scanned is None else files_scanned,
                 files_parsed=len(sources) if files_parsed is None else files_parsed)


def ranking(reasons: Sequence[Reason]) -> tuple[list[str], dict[str, float], dict[str, float]]:
    """Frameworks ranked by the rule (module docstring), with their total and model-building scores."""
    totals: dict[str, float] = dict.fromkeys(SCORED, 0.0)
    building: dict[str, float] = dict.fromkeys(SCORED, 0.0)
    for r in reasons:
        if r.kind == KERAS2_API:
            continue  # tells Keras 2 from Keras 3 once keras has won; scores nothing
        totals[r.framework] = totals.get(r.framework, 0.0) + r.weight
        if r.kind == MODEL_BUILDING:
            building[r.framework] = building.get(r.framework, 0.0) + r.weight
    totals = {fw: round(v, 3) for fw, v in totals.items()}
    building = {fw: round(building.get(fw, 0.0), 3) for fw in totals}

    def rank(fw: str) -> tuple[float, float, bool, int]:
        # Model-building first; weaker evidence breaks ties; then supported, then FRAMEWORKS order.
        order = -FRAMEWORKS.index(fw) if fw in FRAMEWORKS else -len(FRAMEWORKS)
        return building[fw], totals[fw], fw in FRAMEWORKS, order

    return sorted(totals, key=rank, reverse=True), totals, building


def leading_framework(reasons: Sequence[Reason]) -> str | None:
    """The framework the evidence ranks first, supported or not; None when there is none."""
    ranked, totals, _ = ranking(reasons)
    return ranked[0] if totals[ranked[0]] > 0 else None


_WEIGHT = attrgetter("weight")
_POSITION = attrgetter("file", "cell", "line")


def weigh(reasons: Sequence[Reason], override: str | None = None, *, override_file: str = CONFIG_FILE,
          override_line: int = 0, skipped: Sequence[SkippedFile] = (), files_scanned: int = 0,
          files_parsed: int = 0) -> Classification:
    """The decision over collected evidence (pure); see the module docstring for the rule."""
    ranked, totals, building = ranking(reasons)
    runner_up: str | None = None
    close = False
    if override is not None:
        if override not in FRAMEWORKS:
            raise ConfigError(f"framework: {override!r} in {override_file} is not supported "
                              f"(supported: {', '.join(FRAMEWORKS)})",
                              hint=f"set framework: to one of {', '.join(FRAMEWORKS)}")
        chosen = override
        decided_by = OVERRIDE
        first = [Reason(override, OVERRIDE, f"framework: {override} in {override_file}",
                        override_file, override_line, 0.0, override)]
    else:
        chosen = ranked[0]
        if files_scanned == 0 or totals[chosen] <= 0:
            raise _nothing_found(files_scanned, skipped)
        if chosen not in FRAMEWORKS:
            raise _unsupported(chosen, ranked, totals, reasons)
        decided_by = MODEL_BUILDING if building[chosen] > 0 else WEAKER_EVIDENCE
        deciding = building if decided_by == MODEL_BUILDING else totals
        second = ranked[1] if len(ranked) > 1 else None
        if second is not None and deciding[second] > 0:
            runner_up = second
            close = deciding[second] >= CLOSE_RATIO * deciding[chosen]
        if chosen == family(KERAS2) and any(r.kind == KERAS2_API for r in reasons):
            chosen = KERAS2
        first = []
    # The chosen framework's reasons first, then the others' in rank order; strongest first,
    # then by position (a stable sort on weight keeps equal weights in position order).
    groups: dict[str, list[Reason]] = {fw: [] for fw in (chosen, *ranked)}
    for r in sorted(reasons, key=_POSITION):
        groups.setdefault(r.framework, []).append(r)
    ordered = []
    for group in groups.values():
        group.sort(key=_WEIGHT, reverse=True)
        ordered += group
    shown = [fw for fw in ranked if fw in FRAMEWORKS or totals[fw] > 0]
    return Classification(
        framework=cast(Framework, chosen), decided_by=decided_by, reasons=tuple(first + ordered),
        scores=_highest_first({fw: totals[fw] for fw in shown}),
        model_building=_highest_first({fw: building[fw] for fw in shown}),
        skipped=tuple(skipped), files_scanned=files_scanned, files_parsed=files_parsed,
        runner_up=runner_up, close=close)


def _highest_first(scores: dict[str, float]) -> dict[str, float]:
    """Scores sorted by score, highest first; equal scores keep their rank order."""
    return dict(sorted(scores.items(), key=lambda item: item[1], reverse=True))


_FIX = (f"if the code does use {' or '.join(FRAMEWORKS)}, say which with "
        f"{' or '.join(repr(f'framework: {fw}') for fw in FRAMEWORKS)} in {CONFIG_FILE}")


def _nothing_found(files_scanned: int, skipped: Sequence[SkippedFile]) -> ClassifyError:
    supported = ", ".join(FRAMEWORKS)
    if files_scanned == 0:
        return ClassifyError(f"no Python files or notebooks found (supported frameworks: {supported})",
                             hint=f"add the training code (train.py by default); or, {_FIX}")
    detail = f"; {len(skipped)} could not be parsed (first: {skipped[0]})" if skipped else ""
    return ClassifyError(
        f"found no framework in {files_scanned} Python file(s) and notebook(s){detail}: no import or "
        f"use of tensorflow/keras or sklearn, and no requirement naming them (supported: {supported})",
        hint=_FIX)


def _unsupported(chosen: str, ranked: Sequence[str], totals: dict[str, float],
                 reasons: Sequence[Reason]) -> ClassifyError:
    found = []
    for fw in ranked:
        if totals[fw] <= 0:
            continue
        mine = sorted((r for r in reasons if r.framework == fw),
                      key=lambda r: (r.kind == REQUIREMENT, r.file, r.cell or 0, r.line))
        found.append(f"{fw} in {mine[0].where} ({mine[0].evidence})")
    how = "builds the model with" if any(r.framework == chosen and r.kind == MODEL_BUILDING
                                          for r in reasons) else "uses"
    return ClassifyError(
        f"unsupported framework: the code {how} {chosen}; found {'; '.join(found)}. "
        f"mlchain supports {', '.join(FRAMEWORKS)}",
        hint=f"port the training to {' or '.join(FRAMEWORKS)}; or, {_FIX}")
