"""ISO 14224 failure coding: the lists a work order is closed with, chosen, never typed.

Failures can only be counted if every closure uses the same words, so the four
codes (mode, mechanism, cause, maintainable item) come from these lists; a plant
may extend or replace them under ``ticketing.coding``.

>>> coding = CodingConfig()
>>> check_closure(coding, {"failure_mode": "VIB", "failure_mechanism": "2.4 wear",
...                        "failure_cause": "wear and tear", "maintainable_item": "bearing"}, "pump")
>>> check_closure(coding, {"failure_mode": "VIB", "failure_mechanism": "worn", "failure_cause": "wear and tear"}, "pump")
"failure_mechanism 'worn' is not in the coding list (e.g. '1.0 mechanical')"
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

FAILURE_MODES = {
    "ELU": "external leakage", "INL": "internal leakage", "FTS": "fail to start", "STP": "fail to stop",
    "FTF": "fail to function on demand", "FTI": "fail to function as intended", "NOO": "no output",
    "LOO": "low output", "HIO": "high output", "PLU": "plugged / choked", "ERO": "erratic output",
    "PDE": "parameter deviation", "VIB": "vibration", "OHE": "overheating", "NOI": "noise", "BRD": "breakdown",
    "STD": "structural deficiency", "AIR": "abnormal instrument reading", "OTH": "other",
}
FAILURE_MECHANISMS = [
    "1.0 mechanical", "1.1 leakage", "1.2 vibration", "1.3 clearance/alignment", "1.4 deformation",
    "1.5 looseness", "1.6 sticking",
    "2.0 material", "2.1 cavitation", "2.2 corrosion", "2.3 erosion", "2.4 wear", "2.5 breakage", "2.6 fatigue",
    "2.7 overheating", "2.8 burst",
    "3.0 instrument", "3.1 control failure", "3.2 no signal", "3.3 faulty signal", "3.4 out of adjustment",
    "4.0 electrical", "4.1 short circuit", "4.2 open circuit", "4.3 no power", "4.4 faulty power",
    "4.5 earth fault",
    "5.0 external influence", "5.1 blockage", "5.2 contamination",
    "6.0 miscellaneous", "6.1 no cause found",
]
FAILURE_CAUSES = [
    "design", "fabrication/installation", "off-design service", "operating error", "maintenance error",
    "wear and tear", "management", "no fault found",
]
# Equipment class -> where on it a failure is located; "*" applies to every class.
MAINTAINABLE_ITEMS = {
    "*": ["instrument", "control system", "power supply", "piping", "other"],
    "pump": ["bearing", "seal", "impeller", "shaft", "coupling", "casing", "valve"],
    "motor": ["bearing", "winding", "rotor", "stator", "cooling fan", "terminal box"],
    "compressor": ["valve", "piston", "cylinder", "bearing", "seal", "cooler"],
    "fan": ["bearing", "impeller", "belt", "motor"],
    "valve": ["actuator", "seat", "stem", "packing", "positioner"],
    "conveyor": ["belt", "roller", "gearbox", "drive motor"],
}


class CodingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    failure_modes: dict[str, str] = Field(default_factory=lambda: dict(FAILURE_MODES),
                                          description="code -> name (ISO 14224)")
    failure_mechanisms: list[str] = Field(default_factory=lambda: list(FAILURE_MECHANISMS))
    failure_causes: list[str] = Field(default_factory=lambda: list(FAILURE_CAUSES))
    maintainable_items: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in MAINTAINABLE_ITEMS.items()},
        description="equipment class -> items; '*' applies to every class")


def items_for(coding: CodingConfig, equipment_class: str | None) -> list[str]:
    return [*coding.maintainable_items.get(equipment_class or "", []), *coding.maintainable_items.get("*", [])]


def check_closure(coding: CodingConfig, fields: dict[str, Any], equipment_class: str | None) -> str | None:
    """Why the failure coding of a closure is not from the lists, or None."""
    choices: dict[str, list[str]] = {
        "failure_mode": list(coding.failure_modes), "failure_mechanism": coding.failure_mechanisms,
        "failure_cause": coding.failure_causes, "maintainable_item": items_for(coding, equipment_class),
    }
    for name, allowed in choices.items():
        value = fields.get(name)
        if value not in (None, "") and value not in allowed:
            return f"{name} {value!r} is not in the coding list (e.g. {allowed[0]!r})"
    return None
