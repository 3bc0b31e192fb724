#!/usr/bin/env python3
"""Front for moto in the benchmarks (tools/webhook-bench): keeps the function's connections alive
as AWS's endpoints do, and optionally terminates TLS with a generated certificate.

moto's server (werkzeug) answers every request with `Connection: close`, so a function talking to
it directly opens a new connection for every AWS call, and under TLS pays a full handshake for
each: not what happens against DynamoDB and SQS. This proxy reads each HTTP/1.1 request from the
client, forwards it to moto on a fresh upstream connection, and answers on the client's connection
without `Connection: close`. Prints `PORT <n>` first; exits when --parent-pid is gone. Its own CPU
is not counted: only the function's is."""
import argparse
import asyncio
import os
import ssl


async def read_message(reader):
    """One HTTP/1.1 message: (head without the blank line, body). Raises IncompleteReadError at EOF."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    length, chunked = None, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
        lines = [l for l in lines if not l.lower().startswith(b"transfer-encoding:")]
        length = len(body)
        lines.append(b"Content-Length: %d" % length)
    elif length is not None:
        body = await reader.readexactly(length)
    elif lines[0].startswith(b"HTTP/"):
        body = await reader.read()  # response delimited by EOF
        lines.append(b"Content-Length: %d" % len(body))
    else:
        body = b""
    return lines, body


async def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--upstream", type=int, required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--parent-pid", type=int)
    args = p.parse_args()
    ctx = None
    if args.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)

    async def handle(client_reader, client_writer):
        try:
            while True:
                lines, body = await read_message(client_reader)
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", args.upstream)
                up_writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
                await up_writer.drain()
                rlines, rbody = await read_message(up_reader)
                up_writer.close()
                rlines = [l for l in rlines if not l.lower().startswith(b"connection:")]
                client_writer.write(b"\r\n".join(rlines) + b"\r\n\r\n" + rbody)
                await client_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, ValueError):
            pass
        finally:
            try:
                client_writer.close()
            except Exception:
                pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    while True:
        await asyncio.sleep(0.5)
        if args.parent_pid and os.getppid() != args.parent_pid:
            os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
