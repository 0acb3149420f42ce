"""Configuration of a gateway that shares its plant with other gateways."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gateway_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                            description="this gateway's name in the cluster: unique, and the same across restarts")
    database_url: str | None = Field(
        None, description="PostgreSQL where ownership and detector states are kept (none: ticketing.database_url)")
    partitions: int = Field(12, ge=1, le=1024,
                            description="each MQTT source's devices are split into this many partitions; "
                                        "change it only with every gateway stopped")
    lease_s: float = Field(10.0, ge=1, description="a gateway silent this long loses its units to the others")
    renew_every_s: float = Field(2.0, gt=0, description="how often leases are renewed and ownership re-planned")
    checkpoint_every_s: float = Field(15.0, gt=0,
                                      description="how often owned devices' detector state is saved for a successor")

    @model_validator(mode="after")
    def _renew_well_within_the_lease(self) -> "ClusterConfig":
        if self.renew_every_s * 2 > self.lease_s:
            raise ValueError("renew_every_s must be at most half of lease_s (a renewal may be late once)")
        return self
