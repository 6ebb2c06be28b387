import socket, sys, threading, time
port = int(sys.argv[1]); out = sys.argv[2]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", port)); s.listen(1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", port))
def udp():
    i = 0
    while True:
        d, a = u.recvfrom(65536); open(f"{out}.udp{i}", "wb").write(d); i += 1
threading.Thread(target=udp, daemon=True).start()
c, a = s.accept(); c.settimeout(2); buf = b""
try:
    while True:
        d = c.recv(65536)
        if not d: break
        buf += d
except Exception: pass
open(out + ".tcp", "wb").write(buf); print(len(buf))
time.sleep(1)
