//! A minimal DNS message reader/writer (RFC 1035): reads the question of a query, writes
//! answers with one A/AAAA record and error responses. Everything else is forwarded verbatim.
//!
//! Untrusted input: every read is bounds-checked, compression pointers may only point backwards
//! (so they cannot loop), and names are capped at the RFC limits.

use std::net::IpAddr;

/// Size of the fixed DNS header.
pub const HEADER_LEN: usize = 12;
/// RFC 1035 §2.3.4: a name is at most 255 bytes on the wire, a label at most 63.
const MAX_NAME: usize = 255;
const MAX_LABEL: usize = 63;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NOTIMP: u8 = 4;

/// Why a message is not a query we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("shorter than a DNS header")]
    Short,
    #[error("not a query")]
    NotQuery,
    #[error("opcode {0} is not a standard query")]
    Opcode(u8),
    #[error("{0} questions; exactly one is supported")]
    Questions(u16),
    #[error("malformed question")]
    Malformed,
}

/// The parts of a query the server decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// Recursion desired, echoed in the answer.
    pub rd: bool,
    /// Lower-case, without the trailing dot; `None` when a label is not plain ASCII (letters,
    /// digits, `-`, `_`), which no mesh service name is: such names are only forwarded.
    pub name: Option<String>,
    pub qtype: u16,
    pub qclass: u16,
    /// End offset of the question section (the question is copied into answers verbatim).
    pub question_end: usize,
}

/// Reads the header and the single question of a query.
pub fn parse_query(msg: &[u8]) -> Result<Query, ParseError> {
    let header = msg.get(..HEADER_LEN).ok_or(ParseError::Short)?;
    let id = u16::from_be_bytes([header[0], header[1]]);
    let flags = header[2];
    if flags & 0x80 != 0 {
        return Err(ParseError::NotQuery);
    }
    let opcode = (flags >> 3) & 0x0f;
    if opcode != 0 {
        return Err(ParseError::Opcode(opcode));
    }
    let qdcount = u16::from_be_bytes([header[4], header[5]]);
    if qdcount != 1 {
        return Err(ParseError::Questions(qdcount));
    }
    let (name, at) = read_name(msg, HEADER_LEN)?;
    let fixed = msg.get(at..at + 4).ok_or(ParseError::Malformed)?;
    Ok(Query {
        id,
        rd: flags & 0x01 != 0,
        name,
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        question_end: at + 4,
    })
}

/// Reads the name at `start`; returns it (if plain ASCII) and the offset after it.
fn read_name(msg: &[u8], start: usize) -> Result<(Option<String>, usize), ParseError> {
    let mut name = String::new();
    let mut plain = true;
    let mut wire_len = 0usize;
    let mut at = start;
    // Where parsing continues after the name: set at the first pointer.
    let mut end = None;
    loop {
        let len = *msg.get(at).ok_or(ParseError::Malformed)?;
        match len {
            0 => {
                let end = end.unwrap_or(at + 1);
                return Ok((plain.then_some(name), end));
            }
            l if l & 0xc0 == 0xc0 => {
                let low = *msg.get(at + 1).ok_or(ParseError::Malformed)?;
                let target = usize::from(u16::from_be_bytes([l & 0x3f, low]));
                // Only strictly backwards: every jump lowers `at`, so no loop is possible.
                if target >= at {
                    return Err(ParseError::Malformed);
                }
                end.get_or_insert(at + 2);
                at = target;
            }
            l if l & 0xc0 != 0 => return Err(ParseError::Malformed),
            l => {
                let l = usize::from(l);
                wire_len += l + 1;
                if l > MAX_LABEL || wire_len > MAX_NAME {
                    return Err(ParseError::Malformed);
                }
                let label = msg.get(at + 1..at + 1 + l).ok_or(ParseError::Malformed)?;
                plain &= label
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
                if plain {
                    if !name.is_empty() {
                        name.push('.');
                    }
                    name.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
                }
                at += 1 + l;
            }
        }
    }
}

/// An authoritative answer to `query` (whose bytes are `msg`) carrying `ip` as one record, or
/// no record ("no data") when `ip` is `None` or of the other family than asked.
pub fn answer(msg: &[u8], query: &Query, ip: Option<IpAddr>, ttl: u32) -> Vec<u8> {
    let rdata: Option<Vec<u8>> = match (ip, query.qtype) {
        (Some(IpAddr::V4(v4)), TYPE_A | TYPE_ANY) => Some(v4.octets().to_vec()),
        (Some(IpAddr::V6(v6)), TYPE_AAAA | TYPE_ANY) => Some(v6.octets().to_vec()),
        _ => None,
    };
    let rtype = if matches!(ip, Some(IpAddr::V6(_))) {
        TYPE_AAAA
    } else {
        TYPE_A
    };
    let mut out = response_header(query.id, query.rd, 0, 1, u16::from(rdata.is_some()));
    out.extend_from_slice(&msg[HEADER_LEN..query.question_end]);
    if let Some(rdata) = rdata {
        // 0xc00c: a pointer to the question name right after the header.
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    out
}

/// An error response echoing the question of `query`.
pub fn error_for(msg: &[u8], query: &Query, rcode: u8) -> Vec<u8> {
    let mut out = response_header(query.id, query.rd, rcode, 1, 0);
    out.extend_from_slice(&msg[HEADER_LEN..query.question_end]);
    out
}

/// An error response to a message whose question could not be read: header only, or `None`
/// when there is not even a header (nothing to answer to).
pub fn error_for_unparsed(msg: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let header = msg.get(..HEADER_LEN)?;
    if header[2] & 0x80 != 0 {
        return None; // a response: never answer those (no reflection loops)
    }
    let id = u16::from_be_bytes([header[0], header[1]]);
    Some(response_header(id, header[2] & 0x01 != 0, rcode, 0, 0))
}

fn response_header(id: u16, rd: bool, rcode: u8, qd: u16, an: u16) -> Vec<u8> {
    // QR=1, opcode 0, AA=1 (we are the authority for mesh names), RD echoed; RA=1.
    let flags_hi = 0x80 | 0x04 | u8::from(rd);
    let flags_lo = 0x80 | (rcode & 0x0f);
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[flags_hi, flags_lo]);
    for count in [qd, an, 0, 0] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out
}

/// Builds a query (used by tests and health checks).
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let label = &label.as_bytes()[..label.len().min(MAX_LABEL)];
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

/// A response reduced to what a stub resolver uses: id, rcode and the A/AAAA addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: u16,
    pub rcode: u8,
    pub addrs: Vec<IpAddr>,
}

/// Reads a response (tests, and checking that an upstream answer matches its query).
pub fn parse_response(msg: &[u8]) -> Result<Response, ParseError> {
    let header = msg.get(..HEADER_LEN).ok_or(ParseError::Short)?;
    if header[2] & 0x80 == 0 {
        return Err(ParseError::Malformed);
    }
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let mut at = HEADER_LEN;
    for _ in 0..count(4) {
        at = read_name(msg, at)?.1 + 4;
    }
    let mut addrs = Vec::new();
    for _ in 0..count(6) {
        at = read_name(msg, at)?.1;
        let fixed = msg.get(at..at + 10).ok_or(ParseError::Malformed)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let rdata = msg
            .get(at + 10..at + 10 + len)
            .ok_or(ParseError::Malformed)?;
        match (
            rtype,
            <[u8; 4]>::try_from(rdata),
            <[u8; 16]>::try_from(rdata),
        ) {
            (TYPE_A, Ok(v4), _) => addrs.push(IpAddr::from(v4)),
            (TYPE_AAAA, _, Ok(v6)) => addrs.push(IpAddr::from(v6)),
            _ => {}
        }
        at += 10 + len;
    }
    Ok(Response {
        id: u16::from_be_bytes([header[0], header[1]]),
        rcode: header[3] & 0x0f,
        addrs,
    })
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
