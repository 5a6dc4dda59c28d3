"""The base of every pydantic model that is a contract between stages or a file format llmhost reads.

Unknown fields are refused (`extra="forbid"`): a typo in a profile, a field a newer llmhost wrote into a
state file, or a stage handing over something its consumer does not know about fails loudly where it
happens instead of being dropped. Records that must not change once built (a model's spec, the
hardware, the catalog) are `FrozenContract`s.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FrozenContract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
