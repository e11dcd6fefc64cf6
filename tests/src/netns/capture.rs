//! Packet capture on a test link with tcpdump, and a minimal pcap reader returning TCP payloads
//! (enough to assert that a request line is, or is not, visible on the wire).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::Netns;

/// A running `tcpdump -w` inside a namespace.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    path: PathBuf,
}

// === impl Capture ===

impl Capture {
    /// Starts capturing TCP on `iface` inside `ns` into `dir`, at most `max_packets` packets
    /// (a bound, so a chatty link can never fill the disk); returns once tcpdump listens.
    pub fn start(
        ns: &Netns,
        iface: &str,
        dir: &std::path::Path,
        max_packets: u32,
    ) -> Result<Capture> {
        let path = dir.join(format!("{}-{iface}.pcap", ns.name()));
        let mut cmd = Command::new("tcpdump");
        // --immediate-mode: hand each packet over at once (libpcap otherwise batches them for
        // up to a second, and a capture stopped right after the traffic would miss them);
        // -U: write each packet at once; -Z root: keep root so it can write into `dir`;
        // -s 0: whole packets; -n: no name lookups (there is no resolver in the namespace).
        cmd.args([
            "-i",
            iface,
            "--immediate-mode",
            "-U",
            "-n",
            "-s",
            "0",
            "-Z",
            "root",
            "-c",
        ])
        .arg(max_packets.to_string())
        .arg("-w")
        .arg(&path)
        .arg("tcp");
        let mut child = ns
            .wrap(&cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump (installed by deploy/scripts/setup.sh)")?;
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // tcpdump announces "listening on IFACE" once the socket is attached; 10 s only bounds
        // a hang (it normally takes milliseconds).
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line.contains("listening on") => break,
                Ok(_) => continue,
                Err(e) => {
                    let _ = child.kill();
                    bail!("tcpdump did not start listening on {iface}: {e}");
                }
            }
        }
        Ok(Capture {
            child: Some(child),
            path,
        })
    }

    /// Stops tcpdump (SIGINT makes it flush and close the file) and returns every TCP payload
    /// captured, one entry per packet that carried data.
    pub fn finish(mut self) -> Result<Vec<Vec<u8>>> {
        self.settle();
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            child.wait()?;
        }
        let pcap = std::fs::read(&self.path)
            .with_context(|| format!("reading the capture {}", self.path.display()))?;
        tcp_payloads(&pcap)
    }
}

impl Capture {
    /// Waits until the capture file stops growing: packets of traffic that just ended may
    /// still be on their way through the capture socket. Polls every 50 ms; "stopped" means
    /// unchanged for 4 polls; at most 5 s (only a continuously busy link takes that long).
    fn settle(&self) {
        let size = || std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let (mut last, mut still) = (size(), 0);
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(50));
            let now = size();
            still = if now == last { still + 1 } else { 0 };
            last = now;
            if still >= 4 {
                return;
            }
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `needle` occurs in any payload.
pub fn contains(payloads: &[Vec<u8>], needle: &[u8]) -> bool {
    payloads
        .iter()
        .any(|p| p.windows(needle.len()).any(|w| w == needle))
}

/// TCP payloads of an Ethernet pcap file (IPv4 and IPv6 without extension headers).
pub fn tcp_payloads(pcap: &[u8]) -> Result<Vec<Vec<u8>>> {
    let u32_at = |b: &[u8], at: usize, le: bool| -> Option<u32> {
        let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        })
    };
    let magic = u32_at(pcap, 0, true).context("pcap too short")?;
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => bail!("not a pcap file (magic {m:#x})"),
    };
    let linktype = u32_at(pcap, 20, le).context("pcap header")?;
    if linktype != 1 {
        bail!("pcap link type {linktype}: only Ethernet (1) is supported");
    }
    let mut out = Vec::new();
    // 24-byte global header, then records of a 16-byte header + the captured bytes.
    let mut at = 24;
    while let Some(len) = u32_at(pcap, at + 8, le) {
        let start = at + 16;
        let Some(frame) = pcap.get(start..start + len as usize) else {
            break;
        };
        if let Some(payload) = frame_payload(frame).filter(|p| !p.is_empty()) {
            out.push(payload.to_vec());
        }
        at = start + len as usize;
    }
    Ok(out)
}

fn frame_payload(frame: &[u8]) -> Option<&[u8]> {
    let ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    let ip = frame.get(14..)?;
    let (proto, header, total) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes(ip.get(2..4)?.try_into().ok()?));
            (*ip.get(9)?, ihl, total)
        }
        0x86dd => {
            let payload = usize::from(u16::from_be_bytes(ip.get(4..6)?.try_into().ok()?));
            (*ip.get(6)?, 40, 40 + payload)
        }
        _ => return None,
    };
    // Only TCP; the IP length (not the frame length) bounds the payload: Ethernet pads short
    // frames with zeros.
    if proto != 6 {
        return None;
    }
    let tcp = ip.get(header..total.min(ip.len()))?;
    let offset = usize::from(tcp.get(12)? >> 4) * 4;
    tcp.get(offset..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_or_empty_never_a_panic() {
        assert!(tcp_payloads(b"").is_err());
        assert!(tcp_payloads(&[0u8; 40]).is_err());
        let mut header = vec![0xd4, 0xc3, 0xb2, 0xa1];
        header.extend_from_slice(&[0; 16]);
        header.extend_from_slice(&1u32.to_le_bytes());
        header.extend_from_slice(&[0xff; 30]);
        assert!(tcp_payloads(&header).unwrap().is_empty());
    }
}
