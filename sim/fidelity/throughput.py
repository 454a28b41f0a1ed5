"""Alternated throughput check of two mongo-sim binaries from pymongo (sim/FIDELITY.md): insertMany of 1 KB
documents, one change-stream consumer, one oplog tailer (raw BSON, counting only).

    .venv/bin/python sim/fidelity/throughput.py OLD_BIN,NEW_BIN [N]
"""
import socket, subprocess, sys, time
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.cursor import CursorType

N = int(sys.argv[2]) if len(sys.argv) > 2 else 50000

def run(binary):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    p = subprocess.Popen([binary, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        c = MongoClient(f"mongodb://127.0.0.1:{port}/?replicaSet=rs0", document_class=RawBSONDocument)
        for _ in range(100):
            try: c.admin.command("ping"); break
            except Exception: time.sleep(0.1)
        start_ts = c.admin.command("ping")["operationTime"]
        docs = [{"_id": i, "customer": f"c-{i % 1000}", "amount": i / 100, "note": "x" * 900} for i in range(N)]
        coll = c.bench.orders
        t = time.perf_counter()
        for i in range(0, N, 1000):
            coll.insert_many(docs[i:i + 1000], ordered=True)
        ins = N / (time.perf_counter() - t)
        t = time.perf_counter(); n = 0
        with coll.watch(start_at_operation_time=start_ts, batch_size=1000) as cs:
            while n < N:
                if cs.try_next() is not None: n += 1
        cs_rate = N / (time.perf_counter() - t)
        t = time.perf_counter(); n = 0
        cur = c.local["oplog.rs"].find({"ts": {"$gte": start_ts}, "ns": "bench.orders"}, cursor_type=CursorType.TAILABLE_AWAIT, batch_size=1000)
        for _ in cur:
            n += 1
            if n >= N: break
        tail = N / (time.perf_counter() - t)
        return ins, cs_rate, tail
    finally:
        p.kill(); p.wait()

main_bin, fid_bin = sys.argv[1].split(",")
for rnd in range(2):
    for name, b in (("main", main_bin), ("fidelity", fid_bin)):
        ins, cs, tail = run(b)
        print(f"{name:9s} round {rnd}: insertMany {ins:,.0f}/s  change stream {cs:,.0f}/s  oplog tail {tail:,.0f}/s", flush=True)
