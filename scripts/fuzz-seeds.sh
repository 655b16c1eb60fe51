#!/usr/bin/env bash
# Writes the fuzz seed corpus (fuzz/seeds/<target>/) from the wire-format test vectors in
# DESIGN.md. Each seed is one control byte (the target's limits and chunking, see the target's
# docs) followed by a byte stream of frames (for noise_reader: frames the target seals
# itself, or malformed transport messages). Re-run after changing a vector; the output is
# committed.
#
#   bash scripts/fuzz-seeds.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# hex → bytes, spaces ignored; "hello world" helper below.
bin() { local h; h=$(echo "$*" | tr -d ' \n'); printf '%b' "$(echo "$h" | sed 's/\(..\)/\\x\1/g')"; }
HELLO="68656c6c6f20776f726c64"

# Frames (length prefix and message).
hello_frame="00000010 00 03 02 00 0b $HELLO"                    # DirectSendMsg{2, 0, "hello world"}
parsing_error="00000005 00 00 00 09 05"                        # Error(ParsingError{9, 5})
not_supported="00000005 00 00 01 01 02"                        # Error(NotSupported(DirectSendMsg, 2))
rpc_request="0000000d 00 01 00 19000000 00 04 00010203"        # RpcRequest{0, 25, 0, [0,1,2,3]}
rpc_response="0000000a 00 02 19000000 00 02 aabb"              # RpcResponse{25, 0, [aa, bb]}
stream_header="00000016 01 00 2a000000 0a 03 02 00 0b $HELLO"  # Header{42, 10, DirectSendMsg}
stream_fragment="0000000b 01 01 2a000000 fe 03 0b1621"         # Fragment{42, 254, [11,22,33]}
# A whole stream: Header{42, 2, DirectSendMsg{2, 0, "hello world"}}, fragments 1 and 2.
header_2="00000016 01 00 2a000000 02 03 02 00 0b $HELLO"
fragment_1="0000000b 01 01 2a000000 01 03 616263"
fragment_2="0000000a 01 01 2a000000 02 02 6465"
malformed="00000003 00 07 01"                                  # unknown NetworkMessage variant 7

seed() { # target name ctl-byte frames...
  local dir="fuzz/seeds/$1" name=$2 ctl=$3; shift 3
  mkdir -p "$dir"
  bin "$ctl $*" > "$dir/$name"
}

for target in frame_decoder reassembler noise_reader; do
  rm -rf "fuzz/seeds/$target"
done
# frame_decoder: ctl 02 = 4 KiB frames, 1-byte chunks; 0e = 4 KiB frames, 4-byte chunks.
seed frame_decoder hello 02 "$hello_frame"
seed frame_decoder parsing-error 0e "$parsing_error"
seed frame_decoder not-supported 02 "$not_supported"
seed frame_decoder rpc-request 0e "$rpc_request"
seed frame_decoder rpc-response 02 "$rpc_response"
seed frame_decoder stream-header 0e "$stream_header"
seed frame_decoder stream-fragment 02 "$stream_fragment"
seed frame_decoder malformed-then-hello 0e "$malformed $hello_frame"
seed frame_decoder oversized-prefix 01 "ffffffff 00"
seed frame_decoder whole-stream 02 "$header_2 $fragment_1 $fragment_2"
# reassembler: ctl 00 = 65-byte frames, up to 4 fragments; 02 = 128-byte frames, 16 fragments.
seed reassembler whole-stream 00 "$header_2 $fragment_1 $fragment_2"
seed reassembler whole-stream-16 02 "$header_2 $fragment_1 $fragment_2 $hello_frame"
seed reassembler header-then-254 02 "$stream_header $stream_fragment"
seed reassembler replaced 00 "$header_2 $fragment_1 $stream_header $fragment_2"
seed reassembler out-of-order 02 "$header_2 $fragment_2 $fragment_1 $fragment_1 $fragment_2"
# noise_reader (see its docs): ctl bit 0 = 1 seals the plaintext that follows, after an
# alteration byte (00 none, 01 flip, 02 cut, 03 insert), a 2-byte position and a repetition
# byte (low nibble n: 2^n copies per call, top two bits: calls); ctl bit 0 = 0 feeds raw
# ciphertext.
# Chunk size 1 + ctl >> 1: 01 = 1 byte, 0f = 8 bytes, ff = 128 bytes.
seed noise_reader sealed-hello 01 "00 0000 00 $HELLO"
seed noise_reader sealed-frames 0f "00 0000 81 $hello_frame ff $rpc_request ff $stream_fragment"
seed noise_reader sealed-empty-slices 0f "00 0000 00 ff ff $HELLO ff"
seed noise_reader flipped 0f "01 0010 00 $hello_frame"
seed noise_reader cut 0f "02 0005 01 $hello_frame $hello_frame"
seed noise_reader inserted 01 "03 0003 00 $HELLO"
# 100 plaintext bytes, 1,024 copies in one call: two messages, the first a full 65,535.
seed noise_reader sealed-two-messages ff "00 0000 0a $(printf '%0200d' 0)"
seed noise_reader raw-empty-length 00 "0000"
seed noise_reader raw-short-length 02 "000f 000102030405060708090a0b0c0d0e"
seed noise_reader raw-largest-length 00 "ffff 0102"
seed noise_reader raw-forged 0e "001b $HELLO 00000000000000000000000000000000"
ls -l fuzz/seeds/*
