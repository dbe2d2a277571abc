#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::HashMap;

use super::*;

/// Encodes `requests` (ids 1, 2, ...) on a fresh connection.
fn sent(p: &Resp, requests: &[RespRequest]) -> (RespConn, BytesMut) {
    let mut c = p.open();
    let mut out = BytesMut::new();
    for (i, r) in requests.iter().enumerate() {
        p.encode(&mut c, i as u64 + 1, r, &mut out).unwrap();
    }
    (c, out)
}

/// A connection expecting `n` replies.
fn expecting(p: &Resp, n: usize) -> RespConn {
    sent(p, &vec![RespRequest::Ping; n]).0
}

use crate::protocol::test_support::feed;

fn bulk(b: &[u8]) -> RespValue {
    RespValue::Bulk(Bytes::copy_from_slice(b))
}

fn simple(b: &[u8]) -> RespValue {
    RespValue::Simple(Bytes::copy_from_slice(b))
}

fn error(b: &[u8]) -> RespValue {
    RespValue::Error(Bytes::copy_from_slice(b))
}

/// A toy Redis: parses the client's requests with the client's own
/// parser (a request is an array of bulk strings) and answers SET, GET
/// and PING from a map.
fn serve(p: &Resp, requests: usize, wire: &[u8], db: &mut HashMap<Bytes, Bytes>) -> Vec<u8> {
    let mut c = expecting(p, requests);
    let (got, err) = feed(p, &mut c, wire, wire.len().max(1));
    assert_eq!((got.len(), err), (requests, None));
    let mut out = Vec::new();
    for r in got {
        let RespValue::Array(args) = r else {
            panic!("{r:?}")
        };
        let args: Vec<Bytes> = args
            .into_iter()
            .map(|a| match a {
                RespValue::Bulk(b) => b,
                a => panic!("{a:?}"),
            })
            .collect();
        match &args[0][..] {
            b"PING" => out.extend_from_slice(b"+PONG\r\n"),
            b"SET" => {
                db.insert(args[1].clone(), args[2].clone());
                out.extend_from_slice(b"+OK\r\n");
            }
            b"GET" => match db.get(&args[1]) {
                Some(v) => {
                    out.extend_from_slice(format!("${}\r\n", v.len()).as_bytes());
                    out.extend_from_slice(v);
                    out.extend_from_slice(b"\r\n");
                }
                None => out.extend_from_slice(b"$-1\r\n"),
            },
            other => panic!("{other:?}"),
        }
    }
    out
}

#[test]
fn requests_are_arrays_of_bulk_strings() {
    let p = Resp::default();
    let reqs = [
        RespRequest::Ping,
        RespRequest::Set { size: 12 },
        RespRequest::Get { size: 12 },
        RespRequest::Command(vec![Bytes::from_static(b"INCR"), Bytes::from_static(b"n")]),
    ];
    let (c, out) = sent(&p, &reqs);
    assert_eq!(c.in_flight(), 4);
    let k2 = p.key(2);
    let k3 = p.key(3);
    let mut want = b"*1\r\n$4\r\nPING\r\n".to_vec();
    want.extend(format!("*3\r\n$3\r\nSET\r\n${}\r\n{k2}\r\n$12\r\n", k2.len()).as_bytes());
    want.extend_from_slice(&Resp::value(2, 12));
    want.extend_from_slice(b"\r\n");
    want.extend(format!("*2\r\n$3\r\nGET\r\n${}\r\n{k3}\r\n", k3.len()).as_bytes());
    want.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n");
    assert_eq!(&out[..], &want[..]);
    // Keys stay in the keyspace and spread over it.
    let small = Resp {
        keyspace: 10,
        ..Resp::default()
    };
    let keys: std::collections::HashSet<String> = (1..200).map(|id| small.key(id)).collect();
    assert_eq!(keys.len(), 10, "{keys:?}");
    assert_eq!(
        Resp {
            keyspace: 0,
            ..small
        }
        .key(77),
        "key:0"
    );
    // Refused requests write nothing.
    let tiny = Resp {
        max_reply: 10,
        ..Resp::default()
    };
    let mut c = tiny.open();
    let mut out = BytesMut::new();
    assert_eq!(
        tiny.encode(&mut c, 1, &RespRequest::Set { size: 11 }, &mut out),
        Err(RespError::TooLarge { size: 11, max: 10 })
    );
    assert_eq!(
        tiny.encode(&mut c, 1, &RespRequest::Command(Vec::new()), &mut out),
        Err(RespError::EmptyCommand)
    );
    assert!(out.is_empty());
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn any_split_gives_every_reply_type() {
    let p = Resp::default();
    let big = vec![b'v'; 40_000];
    let mut stream = b"+OK\r\n-ERR unknown command\r\n:0\r\n:-42\r\n:9223372036854775807\r\n\
        :-9223372036854775808\r\n$0\r\n\r\n$-1\r\n$5\r\na\r\nb\n\r\n*-1\r\n*0\r\n"
        .to_vec();
    stream.extend(format!("${}\r\n", big.len()).as_bytes());
    stream.extend_from_slice(&big);
    stream.extend_from_slice(b"\r\n");
    stream.extend_from_slice(
        b"*5\r\n$3\r\nfoo\r\n:1\r\n$-1\r\n*2\r\n+x\r\n*1\r\n-OOM no\r\n*0\r\n+\r\n",
    );
    let want = vec![
        simple(b"OK"),
        error(b"ERR unknown command"),
        RespValue::Integer(0),
        RespValue::Integer(-42),
        RespValue::Integer(i64::MAX),
        RespValue::Integer(i64::MIN),
        bulk(b""),
        RespValue::Nil,
        bulk(b"a\r\nb\n"),
        RespValue::Nil,
        RespValue::Array(Vec::new()),
        bulk(&big),
        RespValue::Array(vec![
            bulk(b"foo"),
            RespValue::Integer(1),
            RespValue::Nil,
            RespValue::Array(vec![simple(b"x"), RespValue::Array(vec![error(b"OOM no")])]),
            RespValue::Array(Vec::new()),
        ]),
        simple(b""),
    ];
    for step in [1, 2, 3, 7, 64, 1000, 16_384, stream.len()] {
        let mut c = expecting(&p, want.len());
        let (got, err) = feed(&p, &mut c, &stream, step);
        assert_eq!(err, None, "step {step}");
        assert_eq!(got, want, "step {step}");
        assert_eq!(c.in_flight(), 0);
        assert_eq!(p.decode(&mut c), Ok(None));
        assert!(
            c.allocated() <= 2 * (40_002 + READ_CHUNK),
            "{}",
            c.allocated()
        );
    }
}

#[test]
fn pipelined_sets_and_gets_are_checked() {
    let p = Resp {
        keyspace: 50,
        ..Resp::default()
    };
    let mut db = HashMap::new();
    for size in [0usize, 3, 8, 9, 100, 5000] {
        db.clear();
        // GETs first (nil), then SETs, then GETs of what the SETs wrote.
        let mut reqs = vec![RespRequest::Get { size }; 40];
        reqs.extend(vec![RespRequest::Set { size }; 100]);
        reqs.extend(vec![RespRequest::Get { size }; 200]);
        reqs.push(RespRequest::Ping);
        let (mut c, wire) = sent(&p, &reqs);
        let answers = serve(&p, reqs.len(), &wire, &mut db);
        for step in [1, 5, 1000, answers.len()] {
            let (mut c2, _) = sent(&p, &reqs);
            let (got, err) = feed(&p, &mut c2, &answers, step);
            assert_eq!((got.len(), err), (reqs.len(), None), "{size} {step}");
        }
        let (got, err) = feed(&p, &mut c, &answers, 4096);
        assert_eq!(err, None);
        let mut values = 0;
        for (i, (req, reply)) in reqs.iter().zip(&got).enumerate() {
            let id = i as u64 + 1;
            assert_eq!(p.check(id, req, reply), Ok(()), "{size} #{id}: {reply:?}");
            values += usize::from(matches!(reply, RespValue::Bulk(_)));
            if i < 40 {
                assert_eq!(reply, &RespValue::Nil);
            }
        }
        // Most of the later GETs found a value (50 keys, 100 SETs).
        assert!(values > 100, "{size}: {values}");
    }
}

#[test]
fn wrong_values_and_types_are_mismatches() {
    let p = Resp::default();
    let get = RespRequest::Get { size: 64 };
    // A value of ours for the key of id 9, written by id 9 itself.
    let good = Resp::value(9, 64);
    assert_eq!(p.check(9, &get, &RespValue::Bulk(good.clone())), Ok(()));
    // Another writer of the same key: fine. Find one.
    let same_key = (10..).find(|&w| p.key(w) == p.key(9)).unwrap();
    assert_eq!(
        p.check(9, &get, &RespValue::Bulk(Resp::value(same_key, 64))),
        Ok(())
    );
    // Another key's value: a reordered reply.
    let other = (10..).find(|&w| p.key(w) != p.key(9)).unwrap();
    assert_eq!(
        p.check(9, &get, &RespValue::Bulk(Resp::value(other, 64))),
        Err(Mismatch::OtherRequest)
    );
    for i in 8..64 {
        let mut bad = good.to_vec();
        bad[i] ^= 0x01;
        assert_eq!(
            p.check(9, &get, &RespValue::Bulk(bad.into())),
            Err(Mismatch::Content),
            "{i}"
        );
    }
    assert_eq!(
        p.check(9, &get, &RespValue::Bulk(Resp::value(9, 63))),
        Err(Mismatch::Length)
    );
    // Values too short for an id: only the length is checked.
    let short = RespRequest::Get { size: 4 };
    assert_eq!(p.check(9, &short, &bulk(b"abcd")), Ok(()));
    assert_eq!(p.check(9, &short, &bulk(b"abc")), Err(Mismatch::Length));
    // Error replies, whatever the request.
    let set = RespRequest::Set { size: 64 };
    let any = RespRequest::Command(vec![Bytes::from_static(b"X")]);
    for req in [&get, &set, &RespRequest::Ping, &any] {
        for e in [error(b"ERR wrong"), error(b"OOM command not allowed")] {
            assert_eq!(p.check(1, req, &e), Err(Mismatch::ErrorReply));
        }
    }
    // Types and contents.
    assert_eq!(p.check(1, &set, &simple(b"OK")), Ok(()));
    assert_eq!(p.check(1, &set, &simple(b"QUEUED")), Err(Mismatch::Content));
    assert_eq!(p.check(1, &set, &bulk(b"OK")), Err(Mismatch::Type));
    assert_eq!(p.check(1, &RespRequest::Ping, &simple(b"PONG")), Ok(()));
    assert_eq!(
        p.check(1, &RespRequest::Ping, &simple(b"OK")),
        Err(Mismatch::Content)
    );
    assert_eq!(
        p.check(1, &RespRequest::Ping, &RespValue::Integer(1)),
        Err(Mismatch::Type)
    );
    assert_eq!(p.check(1, &get, &simple(b"OK")), Err(Mismatch::Type));
    assert_eq!(
        p.check(1, &get, &RespValue::Array(Vec::new())),
        Err(Mismatch::Type)
    );
    assert_eq!(p.check(1, &any, &RespValue::Integer(3)), Ok(()));
}

#[test]
fn error_replies_do_not_end_the_stream() {
    let p = Resp::default();
    let reqs = [RespRequest::Set { size: 8 }, RespRequest::Set { size: 8 }];
    let (mut c, _) = sent(&p, &reqs);
    let (got, err) = feed(
        &p,
        &mut c,
        b"-OOM command not allowed when used memory > 'maxmemory'.\r\n+OK\r\n",
        3,
    );
    assert_eq!((got.len(), err), (2, None));
    assert_eq!(p.check(1, &reqs[0], &got[0]), Err(Mismatch::ErrorReply));
    assert_eq!(p.check(2, &reqs[1], &got[1]), Ok(()));
}

#[test]
fn malformed_input_is_a_clear_sticky_error() {
    let p = Resp {
        max_depth: 2,
        max_elements: 10,
        max_reply: 100,
        ..Resp::default()
    };
    let cases: [(&[u8], RespError); 17] = [
        (b"%1\r\n", RespError::UnknownType { byte: b'%' }),
        (b">2\r\n", RespError::UnknownType { byte: b'>' }),
        (b"OK\r\n", RespError::UnknownType { byte: b'O' }),
        (b"\r\n", RespError::UnknownType { byte: b'\r' }),
        (b"+OK\n", RespError::BadLine),
        (b"+O\rK\r\n", RespError::BadLine),
        (b"+\n", RespError::BadLine),
        (b":\r\n", RespError::BadNumber),
        (b":12a\r\n", RespError::BadNumber),
        (b":9223372036854775808\r\n", RespError::BadNumber),
        (b"$-2\r\n", RespError::BadNumber),
        (b"*+1\r\n", RespError::BadNumber),
        (b"$3\r\nabcd\r\n", RespError::BulkUnterminated),
        (b"$101\r\n", RespError::ReplyTooLarge { max: 100 }),
        (b"*11\r\n", RespError::TooManyElements { max: 10 }),
        (b"*1\r\n*1\r\n*1\r\n", RespError::TooDeep { max: 2 }),
        (
            b"*2\r\n$60\r\n012345678901234567890123456789012345678901234567890123456789\r\n$41\r\n",
            RespError::ReplyTooLarge { max: 100 },
        ),
    ];
    for (bytes, want) in cases {
        for step in [1, bytes.len()] {
            let mut c = expecting(&p, 1);
            let (got, err) = feed(&p, &mut c, bytes, step);
            let what = String::from_utf8_lossy(bytes);
            assert!(got.is_empty(), "{what}");
            assert_eq!(err, Some(want), "{what} step {step}");
            // Sticky, and the memory is given back.
            assert_eq!(p.decode(&mut c), Err(want));
            assert!(p.read_buf(&mut c).is_empty());
            assert_eq!(c.allocated(), 0);
        }
    }
    // The error message names the byte.
    assert_eq!(
        RespError::UnknownType { byte: b'%' }.to_string(),
        "unexpected type byte 0x25 (not RESP2)"
    );
}

#[test]
fn replies_nobody_asked_for_fail_the_stream() {
    let p = Resp::default();
    let mut c = expecting(&p, 1);
    let (got, err) = feed(&p, &mut c, b"+PONG\r\n+PONG\r\n", 100);
    assert_eq!((got.len(), err), (1, Some(RespError::Unsolicited)));
    let mut c = p.open();
    let (got, err) = feed(&p, &mut c, b"+", 1);
    assert_eq!((got.len(), err), (0, Some(RespError::Unsolicited)));
}

#[test]
fn memory_is_bounded_against_garbage_and_endless_replies() {
    let p = Resp {
        max_reply: 64 * 1024,
        max_elements: 1000,
        max_depth: 8,
        ..Resp::default()
    };
    let bound = 2 * (MAX_LINE + 3 + READ_CHUNK);
    // Garbage: refused at its first byte.
    let mut c = expecting(&p, 1);
    let (_, err) = feed(&p, &mut c, &[0xff; 100_000], 1000);
    assert_eq!(err, Some(RespError::UnknownType { byte: 0xff }));
    // Endless lines, endless arrays (deep, long, or of endless strings):
    // each stops within its limit, whatever the split.
    let mut endless_line = b"+".to_vec();
    endless_line.extend(vec![b'x'; 1 << 20]);
    let endless_number = b":".iter().chain(&[b'1'; 1 << 20]).copied().collect();
    let deep = b"*1\r\n".repeat(100_000);
    let mut long = b"*1000000\r\n".to_vec();
    long.extend(b":1\r\n".repeat(100_000));
    let mut nested_long = b"*1000\r\n".to_vec();
    nested_long.extend(b"*2\r\n:1\r\n:2\r\n".repeat(1000));
    let mut big_strings = b"*1000\r\n".to_vec();
    big_strings.extend(
        format!("$1000\r\n{}\r\n", "s".repeat(1000))
            .repeat(1000)
            .as_bytes(),
    );
    let mut huge_bulk = b"$1099511627776\r\n".to_vec();
    huge_bulk.extend(vec![b'b'; 1 << 20]);
    let cases: [(Vec<u8>, RespError); 7] = [
        (endless_line, RespError::LineTooLong { max: MAX_LINE }),
        (endless_number, RespError::LineTooLong { max: MAX_LINE }),
        (deep, RespError::TooDeep { max: 8 }),
        (long, RespError::TooManyElements { max: 1000 }),
        (nested_long, RespError::TooManyElements { max: 1000 }),
        (big_strings, RespError::ReplyTooLarge { max: 64 * 1024 }),
        (huge_bulk, RespError::ReplyTooLarge { max: 64 * 1024 }),
    ];
    for (stream, want) in cases {
        for step in [1, 100, 16_384] {
            if step == 1 && stream.len() > 200_000 {
                continue;
            }
            let mut c = expecting(&p, 1);
            let mut peak = 0;
            let mut err = None;
            for piece in stream.chunks(step) {
                let (_, e) = feed(&p, &mut c, piece, step);
                peak = peak.max(c.allocated());
                if e.is_some() {
                    err = e;
                    break;
                }
            }
            assert_eq!(err, Some(want), "step {step}");
            assert!(peak <= bound, "step {step}: {peak}");
        }
    }
    // A caller that never decodes cannot make the buffer grow past the
    // limit: read_buf runs out of room.
    let mut c = expecting(&p, 1000);
    let mut total = 0;
    loop {
        let buf = p.read_buf(&mut c);
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        buf.fill(b'+');
        p.commit(&mut c, n);
        total += n;
    }
    assert_eq!(total, MAX_LINE + 3 + READ_CHUNK);
    assert!(c.allocated() <= 2 * total, "{}", c.allocated());
}
