"""Stock reservations on an embedded nats-server, printed as it runs.

    .venv/bin/python examples/object_store.py [--url nats://...]

Orders are reserved against stock with optimistic, combined updates of a typed ObjectStore;
a watcher reports every stock change as it happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass, field

import jsflow


@dataclass
class Stock:
    on_hand: int = 0
    reserved: list[str] = field(default_factory=list)


async def main(url: str | None) -> None:
    async with jsflow.ensure_server(url) as resolved, await jsflow.connect(resolved) as client:
        if not url:
            print(f"started nats-server at {resolved}")
        stock = await client.object_store("demo_stock", Stock)
        await stock.put("sku-42", Stock(on_hand=3))
        print("stock sku-42: 3 on hand")

        async def report() -> None:
            async with stock.watch("sku-42", updates_only=True) as changes:
                async for change in changes:
                    if change.value is not None:
                        print(f"  watch: rev {change.revision} on_hand={change.value.on_hand}")

        watcher = asyncio.create_task(report())
        await asyncio.sleep(0.2)

        def reserve(order: str):  # type: ignore[no-untyped-def]
            def fn(s: Stock) -> None:
                if s.on_hand <= 0:
                    raise RuntimeError(f"{order}: out of stock")
                s.on_hand -= 1
                s.reserved.append(order)

            return fn

        orders = [f"order-{i}" for i in range(5)]
        results = await asyncio.gather(
            *(stock.update("sku-42", reserve(o)) for o in orders), return_exceptions=True
        )
        for order, result in zip(orders, results, strict=True):
            if isinstance(result, BaseException):
                print(f"{order}: rejected ({result})")
            else:
                print(f"{order}: reserved at revision {result.revision}")
        await asyncio.sleep(0.2)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        final = await stock.get("sku-42")
        assert final is not None
        print(f"final: on_hand={final.value.on_hand} reserved={final.value.reserved}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="use a running NATS server instead of an embedded one")
    asyncio.run(main(parser.parse_args().url))
