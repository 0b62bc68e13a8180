"""The shortest end-to-end path: a daemon process, a producer, a consumer."""

import json


def test_daemon_producer_consumer(procs, fifo_name):
    daemon = procs.daemon(fifo_name)
    consumer = procs.spawn("consumer", "--fifo", fifo_name, "rate=max", "count=5", "--json")
    producer = procs.spawn("producer", "--fifo", fifo_name, "item=x", "rate=100", "count=5")
    assert producer.wait() == 0
    assert consumer.wait() == 0
    records = [json.loads(line) for line in consumer.out]
    assert [r["item"] for r in records] == ["x"] * 5
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert {r["producer"] for r in records} == {producer.pid}
    daemon.signal()
    assert daemon.wait() == 0
