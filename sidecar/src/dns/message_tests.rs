//! Tests of the DNS reader/writer: round trips, hostile names, and garbage never panics.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

#[test]
fn query_round_trip() {
    let msg = build_query(0xbeef, "Reviews.Default.", TYPE_A);
    let q = parse_query(&msg).unwrap();
    assert_eq!(q.id, 0xbeef);
    assert!(q.rd);
    assert_eq!(q.name.as_deref(), Some("reviews.default"));
    assert_eq!(
        (q.qtype, q.qclass, q.question_end),
        (TYPE_A, CLASS_IN, msg.len())
    );
}

#[test]
fn answers_a_and_aaaa_and_no_data() {
    let v4 = IpAddr::V4(Ipv4Addr::new(240, 240, 0, 7));
    let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 7));
    let qa = build_query(7, "api", TYPE_A);
    let resp = parse_response(&answer(&qa, &parse_query(&qa).unwrap(), Some(v4), 30)).unwrap();
    assert_eq!(
        resp,
        Response {
            id: 7,
            rcode: 0,
            addrs: vec![v4]
        }
    );

    let qaaaa = build_query(8, "api", TYPE_AAAA);
    let q = parse_query(&qaaaa).unwrap();
    // An IPv4 VIP asked as AAAA: "no data" (NOERROR, no records), so the client uses the A.
    let resp = parse_response(&answer(&qaaaa, &q, Some(v4), 30)).unwrap();
    assert_eq!(
        resp,
        Response {
            id: 8,
            rcode: 0,
            addrs: vec![]
        }
    );
    let resp = parse_response(&answer(&qaaaa, &q, Some(v6), 30)).unwrap();
    assert_eq!(resp.addrs, vec![v6]);
}

#[test]
fn error_responses() {
    let msg = build_query(9, "x", TYPE_A);
    let resp = parse_response(&error_for(
        &msg,
        &parse_query(&msg).unwrap(),
        RCODE_SERVFAIL,
    ));
    assert_eq!(
        resp.unwrap(),
        Response {
            id: 9,
            rcode: RCODE_SERVFAIL,
            addrs: vec![]
        }
    );
    assert_eq!(error_for_unparsed(&msg[..5], RCODE_FORMERR), None);
    let resp = parse_response(&error_for_unparsed(&msg, RCODE_FORMERR).unwrap()).unwrap();
    assert_eq!(resp.rcode, RCODE_FORMERR);
    // A response is never answered (no reflection between two DNS servers).
    let mut response = msg.clone();
    response[2] |= 0x80;
    assert_eq!(error_for_unparsed(&response, RCODE_FORMERR), None);
    assert_eq!(parse_query(&response), Err(ParseError::NotQuery));
}

#[test]
fn hostile_names_are_rejected() {
    let header = [0u8, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    // A pointer to itself (a loop) and a forward pointer.
    for name in [&[0xc0u8, 12][..], &[0xc0, 40, 0]] {
        let msg = [&header[..], name, &[0, 1, 0, 1]].concat();
        assert_eq!(parse_query(&msg), Err(ParseError::Malformed), "{name:?}");
    }
    // A 64-byte label, and a name over 255 bytes made of legal labels.
    let long_label = [&header[..], &[64], &[b'a'; 64], &[0, 0, 1, 0, 1]].concat();
    assert_eq!(parse_query(&long_label), Err(ParseError::Malformed));
    let mut long_name = header.to_vec();
    for _ in 0..5 {
        long_name.push(60);
        long_name.extend_from_slice(&[b'a'; 60]);
    }
    long_name.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(parse_query(&long_name), Err(ParseError::Malformed));
    // Reserved label types (0x40, 0x80).
    let msg = [&header[..], &[0x41, b'a', 0, 0, 1, 0, 1]].concat();
    assert_eq!(parse_query(&msg), Err(ParseError::Malformed));
}

#[test]
fn non_plain_labels_are_forward_only() {
    let header = [0u8, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    let msg = [&header[..], &[3, b'a', b'.', b'b', 0, 0, 1, 0, 1]].concat();
    assert_eq!(parse_query(&msg).unwrap().name, None);
}

#[test]
fn header_checks() {
    let mut msg = build_query(1, "a", TYPE_A);
    assert_eq!(parse_query(&msg[..11]), Err(ParseError::Short));
    msg[2] = 0x10; // opcode 2 (status)
    assert_eq!(parse_query(&msg), Err(ParseError::Opcode(2)));
    msg[2] = 0x01;
    msg[5] = 2;
    assert_eq!(parse_query(&msg), Err(ParseError::Questions(2)));
}

proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(q) = parse_query(&bytes) {
            let _ = answer(&bytes, &q, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), 30);
            let _ = error_for(&bytes, &q, RCODE_SERVFAIL);
        }
        let _ = error_for_unparsed(&bytes, RCODE_FORMERR);
        let _ = parse_response(&bytes);
    }

    #[test]
    fn mutated_queries_never_panic(
        name in "[a-z0-9-]{1,20}(\\.[a-z0-9-]{1,20}){0,4}",
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        let mut msg = build_query(3, &name, TYPE_A);
        prop_assert_eq!(parse_query(&msg).unwrap().name, Some(name.clone()));
        for (at, byte) in flips {
            let i = at.index(msg.len());
            msg[i] = byte;
        }
        if let Ok(q) = parse_query(&msg) {
            // (Not asserting the answer parses: a pointer into the header may read differently
            // in the response header.)
            let resp = answer(&msg, &q, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))), 30);
            let _ = parse_response(&resp);
        }
    }
}
