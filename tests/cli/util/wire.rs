//! The management network as an attacker sees it: heartbeats captured on
//! the loopback interface (a packet socket: root or CAP_NET_RAW) and sent
//! again unchanged. The attacker has no pool secret.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};
use nix::sys::time::TimeVal;

/// One captured UDP datagram: where it went, and its bytes.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub to: SocketAddrV4,
    pub payload: Vec<u8>,
}

/// The UDP datagrams `from` sends to port `port` during `span`, each once
/// (the loopback interface shows a packet going out and coming in).
/// `Err` says why this machine cannot capture.
pub fn capture_udp(from: Ipv4Addr, port: u16, span: Duration) -> Result<Vec<Datagram>, String> {
    let fd = socket(
        AddressFamily::Packet,
        SockType::Datagram,
        SockFlag::empty(),
        SockProtocol::EthAll,
    )
    .map_err(|e| format!("cannot open a packet socket ({e}): capturing needs root"))?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 200_000)).map_err(|e| e.to_string())?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let end = Instant::now() + span;
    while Instant::now() < end {
        let n = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("capture failed: {e}")),
        };
        if let Some(d) = parse_udp(&buf[..n], from, port) {
            if seen.insert(d.payload.clone()) {
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// An IPv4 UDP datagram from `from` to port `port`, from a packet with
/// its link header removed.
fn parse_udp(p: &[u8], from: Ipv4Addr, port: u16) -> Option<Datagram> {
    let first = *p.first()?;
    if first >> 4 != 4 || *p.get(9)? != 17 {
        return None;
    }
    let ihl = usize::from(first & 0xf) * 4;
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(*p.get(16)?, p[17], p[18], p[19]);
    let udp = p.get(ihl..)?;
    let dst_port = u16::from_be_bytes([*udp.get(2)?, udp[3]]);
    let len = usize::from(u16::from_be_bytes([*udp.get(4)?, udp[5]]));
    if src != from || dst_port != port || len < 8 {
        return None;
    }
    let payload = udp.get(8..len)?.to_vec();
    Some(Datagram {
        to: SocketAddrV4::new(dst, dst_port),
        payload,
    })
}

/// Send `packets` again, round after round, for `span`: each round sends
/// every packet once, in the order captured, one every `gap`.
pub fn replay(packets: &[Datagram], span: Duration, gap: Duration) -> usize {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return 0;
    };
    let end = Instant::now() + span;
    let mut sent = 0;
    while Instant::now() < end {
        for d in packets {
            if Instant::now() >= end {
                break;
            }
            if sock.send_to(&d.payload, d.to).is_ok() {
                sent += 1;
            }
            std::thread::sleep(gap);
        }
    }
    sent
}
