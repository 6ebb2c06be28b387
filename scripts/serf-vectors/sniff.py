import socket, struct, sys, time, os
src, dst, secs, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
s.bind(("lo", 0)); s.settimeout(0.5)
end = time.time() + secs; n = 0
os.makedirs(out, exist_ok=True)
while time.time() < end:
    try: frame = s.recv(65535)
    except socket.timeout: continue
    ip = frame[14:]
    if len(ip) < 20 or ip[9] != 17: continue
    ihl = (ip[0] & 15) * 4
    sp, dp, ln = struct.unpack("!HHH", ip[ihl:ihl+6])
    if sp != src or dp != dst: continue
    payload = ip[ihl+8:ihl+ln]
    open(f"{out}/udp{n:03d}.bin", "wb").write(payload); n += 1
print(n)
