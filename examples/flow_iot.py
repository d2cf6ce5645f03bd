"""Flow pattern 5, IoT aggregation: a device's temperature and pressure readings are
correlated within 30 s, and five devices are analysed per call; each tenant's readings
are batched apart, and a reading that never finds its pair is a dead letter.

Run: python examples/flow_iot.py
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel

from freight import BatchSpec, Flow, JoinSpec
from freight.flow import ForBatch, Group, Tenant


class Temperature(BaseModel):
    site: str
    device_id: str
    celsius: float


class Pressure(BaseModel):
    site: str
    device_id: str
    hpa: float


class SiteAnalysis(BaseModel):
    site: str
    devices: list[str]
    mean_celsius: float


async def analyse(groups: list[Group]) -> ForBatch:
    temperatures = [g[Temperature] for g in groups]
    return ForBatch(  # one analysis for the five devices of the call
        SiteAnalysis(
            site=temperatures[0].site,
            devices=sorted(t.device_id for t in temperatures),
            mean_celsius=round(sum(t.celsius for t in temperatures) / len(temperatures), 2),
        )
    )


async def main() -> None:
    flow = Flow()
    (flow.consumer("iot", all_tenants=True)
         .consumes(Temperature, Pressure,
                   join=JoinSpec(by="device_id", within=timedelta(seconds=30)),
                   batch=BatchSpec(size=5, timeout=60))
         .publishes(SiteAnalysis)
         .does(analyse))  # fmt: skip
    by_site = Tenant(extractor=lambda reading: reading.site)
    async with flow:
        for site in ("north", "south"):
            for d in range(5):
                device = f"{site}-{d}"
                await flow.publish(Temperature(site=site, device_id=device, celsius=18 + d),
                                   visibility=by_site)  # fmt: skip
                await flow.publish(Pressure(site=site, device_id=device, hpa=1010 - d),
                                   visibility=by_site)  # fmt: skip
        await flow.publish(Temperature(site="north", device_id="north-9", celsius=40),
                           visibility=by_site)  # fmt: skip
        await flow.run_until_idle()
    for envelope in flow.artifacts(SiteAnalysis):
        a = envelope.payload
        print(f"{a.site}: {len(a.devices)} devices, mean {a.mean_celsius} °C "
              f"(visible to tenant {envelope.tenant})")  # fmt: skip
    for dead in flow.dead_letters():
        print(f"dead letter ({dead.reason}): {dead.artifacts}")


if __name__ == "__main__":
    asyncio.run(main())
