"""Placement (pure): free memory per device, LRU eviction and what it never evicts, pack/spread, pins."""

from __future__ import annotations

from llmhost.gateway.placement import Device, Need, Resident, free_bytes, others_use, place

MiB = 1 << 20
GiB = 1 << 30


def cpu(capacity=16 * GiB, used=0, budget=None):
    return Device("cpu", capacity, used_bytes=used, budget_bytes=budget)


def res(name, mib, *, last_used=0.0, loaded_at=0.0, device="cpu", measured=None, **kw):
    return Resident(
        name, {device: mib * MiB}, measured={device: measured * MiB} if measured else {},
        last_used=last_used, loaded_at=loaded_at, **kw,
    )  # fmt: skip


def test_free_memory_is_capacity_less_others_and_the_larger_of_planned_and_measured():
    a = res("a", 100, measured=300)  # measured above plan: the measure counts
    b = res("b", 200, measured=50)  # measured below plan: the plan counts
    dev = cpu(capacity=1000 * MiB, used=500 * MiB)  # 350 of it is a + b; 150 is another program
    assert others_use(dev, [a, b]) == 150 * MiB
    assert free_bytes(dev, [a, b], 150 * MiB) == (1000 - 150 - 300 - 200) * MiB
    budgeted = cpu(capacity=1000 * MiB, used=500 * MiB, budget=600 * MiB)
    assert free_bytes(budgeted, [a, b], 150 * MiB) == (600 - 300 - 200) * MiB


def test_it_fits_without_eviction_when_there_is_room():
    d = place(Need("c", {"cpu": 100 * MiB}), [cpu(budget=500 * MiB)], [res("a", 200), res("b", 100)], now=100)
    assert d.fits and d.evict == [] and d.assignment == {"cpu": "cpu"}


def test_the_least_recently_used_idle_model_is_evicted_and_only_as_many_as_needed():
    residents = [res("old", 150, last_used=1), res("mid", 150, last_used=5), res("new", 150, last_used=9)]
    d = place(Need("x", {"cpu": 200 * MiB}), [cpu(budget=600 * MiB)], residents, now=100)
    assert d.fits and d.evict == ["old"]  # 600 - 450 = 150 free; evicting old gives 300
    d = place(Need("x", {"cpu": 400 * MiB}), [cpu(budget=600 * MiB)], residents, now=100)
    assert d.fits and d.evict == ["old", "mid"]


def test_evictions_that_turn_out_unneeded_are_taken_back():
    # LRU order: tiny (10) first, then large (300): evicting large alone is enough, so tiny stays.
    residents = [res("tiny", 10, last_used=1), res("large", 300, last_used=2)]
    d = place(Need("x", {"cpu": 300 * MiB}), [cpu(budget=500 * MiB)], residents, now=100)
    assert d.fits and d.evict == ["large"]


def test_never_evicted_pinned_hand_started_in_flight_or_young():
    residents = [
        res("pinned", 100, last_used=1, pinned=True),
        res("manual", 100, last_used=2, manual=True),
        res("busy", 100, last_used=3, in_flight=1),
        res("young", 100, last_used=4, loaded_at=95),
    ]
    d = place(Need("x", {"cpu": 200 * MiB}), [cpu(budget=500 * MiB)], residents, now=100, min_residence=30)
    assert not d.fits and not d.never_fits
    assert [b.split(" ")[0] for b in d.blocked_by] == ["pinned", "manual", "busy", "young"]
    assert "1 request(s) in flight" in d.reason and "loaded too recently" in d.reason
    # Once the young one is old enough it is the one to go.
    d = place(Need("x", {"cpu": 200 * MiB}), [cpu(budget=500 * MiB)], residents, now=200, min_residence=30)
    assert d.fits and d.evict == ["young"]


def test_a_model_bigger_than_the_empty_machine_never_fits():
    d = place(Need("huge", {"cpu": 2 * GiB}), [cpu(capacity=4 * GiB, used=3 * GiB)], [], now=0)
    assert d.never_fits and "even with nothing else loaded" in d.reason


def gpu(i, capacity=80 * GiB, used=0):
    return Device(f"cuda:{i}", capacity, used_bytes=used)


def test_pack_fills_the_fullest_gpu_and_spread_the_emptiest():
    devices = [cpu(), gpu(0), gpu(1)]
    residents = [res("a", 40 * 1024, device="cuda:0", last_used=1)]
    need = Need("b", {"cuda:0": 20 * GiB, "cpu": 1 * GiB})
    packed = place(need, devices, residents, now=10, policy="pack")
    spread = place(need, devices, residents, now=10, policy="spread")
    assert packed.assignment == {"cpu": "cpu", "cuda:0": "cuda:0"}
    assert spread.assignment == {"cpu": "cpu", "cuda:0": "cuda:1"} and spread.gpus == ["cuda:1"]


def test_a_tensor_parallel_need_takes_distinct_gpus_and_devices_pins_them():
    devices = [cpu(), gpu(0), gpu(1), gpu(2)]
    need = Need("tp2", {"cuda:0": 60 * GiB, "cuda:1": 60 * GiB})
    d = place(need, devices, [res("a", 30 * 1024, device="cuda:1")], now=10)
    assert d.fits and sorted(d.assignment.values()) == ["cuda:0", "cuda:2"]
    pinned = Need("one", {"cuda:0": 10 * GiB}, allowed=frozenset({"cuda:2"}))
    assert place(pinned, devices, [], now=0).assignment == {"cuda:0": "cuda:2"}
    # Pinned to a GPU that cannot hold it: eviction there, even though another GPU is free.
    full = [res("c", 75 * 1024, device="cuda:2", last_used=1)]
    d = place(pinned, devices, full, now=100)
    assert d.fits and d.evict == ["c"] and d.gpus == ["cuda:2"]


def test_eviction_only_helps_on_the_device_it_frees():
    devices = [cpu(), gpu(0, capacity=24 * GiB)]
    residents = [
        res("cpu-model", 1024, last_used=1),
        res("gpu-model", 20 * 1024, device="cuda:0", last_used=2),
    ]
    d = place(Need("x", {"cuda:0": 10 * GiB}), devices, residents, now=100)
    assert d.fits and d.evict == ["gpu-model"]


def test_a_devices_pin_the_machine_cannot_honour_says_so_instead_of_not_fitting_memory():
    # It said "a needs 129.00 MiB on cpu, 605.00 MiB on cuda:0, ..., more than 1.00 GiB on cpu, 23.99 GiB
    # on cuda:0 ... even with nothing else loaded" (gateway plan on rtx-4090:2); on a CPU-only machine a
    # pin to a GPU it does not have was ignored and the model "fit" on the CPU.
    two = [cpu(), gpu(0), gpu(1)]
    spans_two = {"cpu": 129 * MiB, "cuda:0": 600 * MiB, "cuda:1": 600 * MiB}
    missing = place(Need("a", spans_two, allowed=frozenset({"cuda:5"})), two, [], now=0)
    assert not missing.fits and missing.never_fits and not missing.room
    assert "devices: cuda:5" in missing.reason and "cpu, cuda:0, cuda:1" in missing.reason, missing.reason
    on_cpu = place(Need("b", spans_two, allowed=frozenset({"cpu"})), two, [], now=0)
    assert not on_cpu.fits and on_cpu.never_fits and not on_cpu.room
    assert "2 GPUs" in on_cpu.reason and "devices: cpu" in on_cpu.reason, on_cpu.reason
    cpu_only = place(Need("c", {"cpu": 129 * MiB}, allowed=frozenset({"cuda:0"})), [cpu()], [], now=0)
    assert not cpu_only.fits and "devices: cuda:0" in cpu_only.reason and "(cpu)" in cpu_only.reason
    # What the machine has is still placed as before.
    assert place(Need("d", {"cpu": 1 * MiB}, allowed=frozenset({"cpu"})), [cpu()], [], now=0).fits
