//! Every byte stream captured from DragonFly's C daemon decodes with good CRCs and sequence,
//! in any chunking, and the frames the capture walk names are the ones we see.

use dmsg_core::decode::DecoderConfig;
use dmsg_core::wire::{Body, Command, Flags, MsgId};
use dmsg_tests::{decode_stream, dragonfly_dir};

fn captures() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dragonfly_dir())
        .expect("tests/data/dragonfly exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "bin"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert_eq!(out.len(), 16, "expected 16 capture files");
    out
}

#[test]
fn every_capture_decodes_completely_in_any_chunking() {
    for (name, bytes) in captures() {
        let (whole, err) = decode_stream(&bytes, bytes.len(), DecoderConfig::default());
        assert_eq!(err, None, "{name}");
        let wire: usize = whole
            .iter()
            .map(|f| f.ext.len() + dmsg_core::wire::align64(f.aux.len()))
            .sum();
        assert_eq!(wire, bytes.len(), "{name}: frames do not cover the stream");
        for chunk in [1, 3, 63, 64, 65, 200] {
            let (frames, err) = decode_stream(&bytes, chunk, DecoderConfig::default());
            assert_eq!(err, None, "{name} chunk {chunk}");
            assert_eq!(frames, whole, "{name} chunk {chunk}");
        }
        for f in &whole {
            assert!(f.body.is_ok(), "{name}: {:?}", f.body);
            assert!(!f.big_endian);
        }
    }
}

#[test]
fn span_capture_fields_match_the_walk() {
    let bytes = std::fs::read(dragonfly_dir().join("03_plain_span_conn0_to_service.bin")).unwrap();
    let (frames, err) = decode_stream(&bytes, 17, DecoderConfig::default());
    assert_eq!(err, None);
    assert_eq!(frames.len(), 6);
    // #0 LNK_CONN|CREATE
    let f = &frames[0];
    assert_eq!(f.header.cmd.0, 0x8000_1106);
    assert_eq!(f.header.msgid, MsgId(0x0000_7f0e_a000_1110));
    assert_eq!(f.header.salt, 0x8b45_6700);
    assert_eq!(f.header.hdr_crc, 0x2bf9_6514);
    match &f.body {
        Ok(Body::Conn(c)) => {
            assert_eq!(c.peer_mask, u64::MAX);
            assert_eq!(c.peer_type, 1);
            assert!(c.peer_label.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // #1 LNK_ERROR|CREATE|REPLY|REVTRANS
    assert_eq!(
        frames[1].header.cmd.flags(),
        Flags::CREATE | Flags::REPLY | Flags::REVTRANS
    );
    assert_eq!(frames[1].header.cmd.command(), Command::LnkError);
    // #2 LNK_SPAN|CREATE with ids and labels
    match &frames[2].body {
        Ok(Body::Span(s)) => {
            assert_eq!(
                s.peer_id.to_string(),
                "11111111-2222-3333-4444-555555555555"
            );
            assert_eq!(s.pfs_id.to_string(), "66666666-7777-8888-9999-aaaaaaaaaaaa");
            assert_eq!(s.pfs_type, 8);
            assert_eq!(s.peer_type, 3);
            assert_eq!(s.proto_version, 1);
            assert_eq!(s.dist, 0);
            assert_eq!(s.rnss, 0x1234_5678);
            assert_eq!(s.peer_label.as_str(), Some("cpeer-cluster"));
            assert_eq!(s.pfs_label.as_str(), Some("cpeer-pfs"));
        }
        other => panic!("{other:?}"),
    }
    // #3 DBG_SHELL with "tree\0"
    assert_eq!(frames[3].header.cmd.command(), Command::DbgShell);
    assert_eq!(frames[3].aux, b"tree\0");
    assert_eq!(frames[3].header.aux_crc, 0xb1e3_ffe0);
    // #4 PING, #5 SPAN|DELETE
    assert_eq!(frames[4].header.cmd.0, 0x0000_0101);
    assert_eq!(frames[5].header.cmd.0, 0x4000_1207);
}

#[test]
fn shell_capture_replies_carry_the_prompt() {
    let bytes =
        std::fs::read(dragonfly_dir().join("11_plain_shell_conn0_from_service.bin")).unwrap();
    let (frames, err) = decode_stream(&bytes, 5, DecoderConfig::default());
    assert_eq!(err, None);
    assert_eq!(frames.len(), 17);
    let prompts = frames.iter().filter(|f| f.aux == b"debug> \0").count();
    assert_eq!(prompts, 6);
    assert_eq!(
        frames[3].header.cmd.0, 0x400f_ff01,
        "daemon closes its LNK_CONN"
    );
}
