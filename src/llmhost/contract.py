"""The base of every pydantic model that is a contract between stages or a file format llmhost reads.

Unknown fields are refused (`extra="forbid"`): a typo in a profile, a field a newer llmhost wrote into a
state file, or a stage handing over something its consumer does not know about fails loudly where it
happens instead of being dropped. Records that must not change once built (a model's spec, the
hardware, the catalog) are `FrozenContract`s.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FrozenContract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Constrained numbers more than one contract checks (a profile, a plan's engine options): one spelling each.
# A share of a device's memory, as vLLM's --gpu-memory-utilization takes it.
MemoryShare = Annotated[float, Field(gt=0, le=1)]
# A size that is at least one: parallel sizes, sequences, batch sizes, tokens of context, threads.
Count = Annotated[int, Field(gt=0)]
# A TCP port to listen on.
Port = Annotated[int, Field(ge=1, le=65535)]
# A count that may be zero: offloaded layers, bytes.
Amount = Annotated[int, Field(ge=0)]
