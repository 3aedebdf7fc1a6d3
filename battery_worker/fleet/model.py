"""What a site is beside its battery: its grid connection and its fleet of machines. Pure; validated.

Units. The MARA hackathon API prices a machine as revenue = machines × output × price and energy cost =
power (W) × energy_price. We keep its ratios and read ``energy_price`` per MWh, so the battery's money
(MWh × energy_price) is in the same money as the machines'. Per hour of running:

    money per hour = Σ machines × output × price / 10⁶ − MW × energy_price

i.e. the API's per-watt pricing scaled to MW: one MW of a type earns ``output × price / power_W`` per hour
(its *revenue per MWh*), against ``energy_price`` for the energy it draws. ``hash_price`` pays the miners,
``token_price`` the inference machines.

The grid: import = loads + battery charge − battery discharge, within [−export limit, import limit] (MW).
Export is paid at ``export_price_factor`` × energy_price; with the default export limit of 0 the battery can
only serve the site's own load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from battery_worker.battery_config import SIZE_LIMIT, require_finite
from battery_worker.errors import InvalidConfig

PaidBy = Literal["hash", "token"]
WATTS_PER_KW = 1000.0
KW_PER_MW = 1000.0


def _finite(field: str, value: object) -> float:
    require_finite(field, value, InvalidConfig)
    return float(cast(float, value))  # an int or a float: require_finite said so


def _count(field: str, value: object) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidConfig(field, value, "must be a whole number >= 0")
    return value


@dataclass(frozen=True, slots=True)
class MachineType:
    """``count`` identical machines, each drawing ``power_kw`` and producing ``output`` (hash or tokens)."""

    name: str
    power_kw: float
    output: float
    count: int
    paid_by: PaidBy
    min_running: int = 0

    def __post_init__(self) -> None:
        # Fields named as they are, the machine in the problem: the settings put the list's place before
        # them (site.machines.0.power_kw), where 'machines.x.' made site.machines.0.machines.x.power_kw.
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidConfig("name", self.name, "must be a non-empty name")
        of = f"(machine {self.name!r})"
        if _finite("power_kw", self.power_kw) <= 0:
            raise InvalidConfig("power_kw", self.power_kw, f"must be > 0 {of}")
        if _finite("output", self.output) < 0:
            raise InvalidConfig("output", self.output, f"must be >= 0 {of}")
        object.__setattr__(self, "count", _count("count", self.count))
        object.__setattr__(self, "min_running", _count("min_running", self.min_running))
        if self.paid_by not in ("hash", "token"):
            raise InvalidConfig("paid_by", self.paid_by, f"must be 'hash' or 'token' {of}")
        if self.min_running > self.count:
            raise InvalidConfig("min_running", self.min_running, f"must not exceed count {self.count} {of}")

    @property
    def machine_mw(self) -> float:
        return self.power_kw / KW_PER_MW

    @property
    def max_mw(self) -> float:
        return self.count * self.machine_mw

    @property
    def min_mw(self) -> float:
        return self.min_running * self.machine_mw

    def price(self, hash_price: float, token_price: float) -> float:
        return hash_price if self.paid_by == "hash" else token_price

    def revenue_per_mwh(self, hash_price: float, token_price: float) -> float:
        """What one MW of this type earns per hour: output × price / power in W."""
        return self.output * self.price(hash_price, token_price) / (self.power_kw * WATTS_PER_KW)

    def machine_revenue_per_hour(self, hash_price: float, token_price: float) -> float:
        """One machine's revenue per hour: output × price / 10⁶ (the API's model, per MW)."""
        return self.output * self.price(hash_price, token_price) / 1e6


# The API's five machine types. The default mix holds every type, so curtailment order is visible (per
# watt, air miners make 0.29 hash against 1 for hydro and immersion, GPUs 0.2 tokens against 3.3 for the
# ASICs), with most power in the efficient types, as a site would buy them: 3.5 + 5 + 6.5 = 15 MW of
# mining, 6 + 4 = 10 MW of inference (the seed's site).
DEFAULT_MACHINES: tuple[MachineType, ...] = (
    MachineType("air_miners", power_kw=3.5, output=1_000, count=1_000, paid_by="hash"),
    MachineType("hydro_miners", power_kw=5.0, output=5_000, count=1_000, paid_by="hash"),
    MachineType("immersion_miners", power_kw=10.0, output=10_000, count=650, paid_by="hash"),
    MachineType("asic_inference", power_kw=15.0, output=50_000, count=400, paid_by="token"),
    MachineType("gpu_inference", power_kw=5.0, output=1_000, count=800, paid_by="token"),
)


@dataclass(frozen=True, slots=True)
class SiteModel:
    """The grid connection (MW) and the fleet. A fleet that could draw more than the import limit is refused:
    the battery cannot be relied on to cover it (it may be empty at start)."""

    import_limit_mw: float = 45.0  # the fleet's 25 MW + the default battery's 20 MW charge rate
    export_limit_mw: float = 0.0
    export_price_factor: float = 1.0
    machines: tuple[MachineType, ...] = DEFAULT_MACHINES

    def __post_init__(self) -> None:
        if _finite("import_limit_mw", self.import_limit_mw) <= 0:
            raise InvalidConfig("import_limit_mw", self.import_limit_mw, "must be > 0")
        if _finite("export_limit_mw", self.export_limit_mw) < 0:
            raise InvalidConfig("export_limit_mw", self.export_limit_mw, "must be >= 0")
        for name in ("import_limit_mw", "export_limit_mw"):
            if getattr(self, name) > SIZE_LIMIT:
                raise InvalidConfig(name, getattr(self, name), f"must be at most {SIZE_LIMIT:g}")
        if not 0 <= _finite("export_price_factor", self.export_price_factor) <= 1:
            # Above 1 the site would earn by importing only to export again.
            raise InvalidConfig("export_price_factor", self.export_price_factor, "must be within 0-1")
        object.__setattr__(self, "machines", tuple(self.machines))
        names = [machine.name for machine in self.machines]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise InvalidConfig("machines", duplicates, "machine type names must be unique")
        if self.fleet_mw > self.import_limit_mw + 1e-9:
            raise InvalidConfig(
                "machines",
                f"{self.fleet_mw:g} MW",
                f"the fleet draws more than the site's import limit of {self.import_limit_mw:g} MW",
            )

    @property
    def fleet_mw(self) -> float:
        """Every machine running."""
        return sum(machine.max_mw for machine in self.machines)

    @property
    def min_load_mw(self) -> float:
        """Every type at its minimum running count."""
        return sum(machine.min_mw for machine in self.machines)

    def battery_window_mw(self) -> tuple[float, float]:
        """Most the battery may charge and discharge (site side, MW) whatever the machines do.

        Charging shares the import limit with the minimum load; a discharge must be absorbed by the whole
        fleet running plus what may be exported.
        """
        return max(0.0, self.import_limit_mw - self.min_load_mw), self.fleet_mw + self.export_limit_mw
