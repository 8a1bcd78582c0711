"""Sustainability parts of the fleet spec: metering, the cost model, and budget alerts."""

from __future__ import annotations

from pathlib import Path

from pydantic import AnyHttpUrl, Field, model_validator

from hubfleet.spec.base import SpecModel
from hubfleet.spec.units import Seconds


class RateCard(SpecModel):
    """Prices applied to metered usage (defaults: OpenCost's public default prices, USD)."""

    currency: str = Field("USD", description="currency of every price")
    cpu_hour: float = Field(0.031611, ge=0, description="price of one vCPU-hour")
    memory_gb_hour: float = Field(0.004237, ge=0, description="price of one GiB of memory for an hour")
    storage_gb_month: float = Field(0.04, ge=0, description="price of one GiB of home storage for a month")
    hub_monthly_fee: float = Field(0, ge=0, description="fixed monthly cost of each hub (its share of the machine)")


class Metering(SpecModel):
    """The usage collector run by the fleet's supervisor."""

    enabled: bool = Field(True, description="sample hubs' usage")
    interval: Seconds = Field(60, description="how often every running server is sampled")
    storage_interval: Seconds = Field(86400, description="how often home directories are measured")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the fleet database (default: SQLite in the state directory)"
    )


class Usage(SpecModel):
    """Metering, the cost model, and budget alerts for the whole fleet."""

    metering: Metering = Field(default_factory=Metering)
    rates: RateCard = Field(default_factory=RateCard, description="prices applied to usage (when no bill is given)")
    bill_csv: Path | None = Field(
        None,
        description="a cloud bill (CSV: date, component, cost) shared out by usage instead of the rate card",
    )
    alert_webhook: AnyHttpUrl | None = Field(
        None, description="URL that budget alerts (80 % and 100 %) are POSTed to as JSON, besides the log"
    )
    alert_thresholds: list[float] = Field(
        default_factory=lambda: [0.8, 1.0], description="fractions of a budget that raise an alert"
    )

    @model_validator(mode="after")
    def _thresholds(self) -> Usage:
        if any(t <= 0 for t in self.alert_thresholds):
            raise ValueError("alert thresholds must be greater than zero")
        return self


class Console(SpecModel):
    """The fleet console at the front door's `/`."""

    operators: list[str] = Field(
        default_factory=list,
        description="who sees every hub, as `<hub>:<user>` (that hub's login); a hub's admins see their own hub",
    )
    session_ttl: Seconds = Field(8 * 3600, description="how long a console login lasts")
