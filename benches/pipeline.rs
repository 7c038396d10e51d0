//! Throughput of the per-chunk work: AEAD seal/open, blake3, zstd by level, and the
//! whole chunk pipeline (hash + compress + seal, and open + decompress + verify), over
//! chunk sizes, on random (incompressible) and text-like (compressible) data; and the
//! whole frame path stage by stage (`frame/*`), so that a regression shows where.
//!
//! Run: `cargo bench --bench pipeline` (one group: `cargo bench --bench pipeline --
//! frame/`). These call the library, never the binary.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::io::{Seek, SeekFrom};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::executor::block_on;
use pcp::Compression;
use pcp::bench::{self as pipeline, FrameKey, Pool};

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::Rng::fill(&mut rand::thread_rng(), v.as_mut_slice());
    v
}

/// Text-like data: words from a small vocabulary, compresses about 4:1 with zstd.
fn texty(len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "fn ", "let ", "mut ", "self", ".await", "Result<", "Vec<u8>", "impl ", "match ", "=> ",
        "{\n", "}\n", "    ", "chunk", "frame", "error", "(", ")", ";\n", "pub ",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut x: u32 = 12345;
    while out.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        out.extend_from_slice(WORDS[(x >> 16) as usize % WORDS.len()].as_bytes());
    }
    out.truncate(len);
    out
}

const SIZES: [usize; 4] = [64 << 10, 256 << 10, 1 << 20, 4 << 20];

fn aead(c: &mut Criterion) {
    let key = FrameKey::new([1; 32]);
    let mut g = c.benchmark_group("aead");
    for size in SIZES {
        let data = random(size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("seal", size), &data, |b, d| {
            b.iter(|| {
                let mut buf = d.clone();
                key.seal(0, false, &mut buf).expect("seal")
            });
        });
        let mut sealed = data.clone();
        let header = key.seal(0, false, &mut sealed).expect("seal");
        g.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, s| {
            b.iter(|| {
                let mut buf = s.clone();
                key.open(0, header, &mut buf).expect("open");
            });
        });
    }
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let mut g = c.benchmark_group("blake3");
    for size in SIZES {
        let data = random(size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &data, |b, d| {
            b.iter(|| blake3::hash(d))
        });
    }
    g.finish();
}

fn compression(c: &mut Criterion) {
    let mut g = c.benchmark_group("zstd");
    let size = 1 << 20;
    g.throughput(Throughput::Bytes(size as u64));
    for (name, data) in [("random", random(size)), ("text", texty(size))] {
        for level in [1, 3, 6] {
            g.bench_with_input(BenchmarkId::new(format!("{name}/level"), level), &data, |b, d| {
                b.iter(|| pipeline::maybe_compress(d, Compression::Zstd(level)));
            });
        }
    }
    g.finish();
}

fn whole_chunk(c: &mut Criterion) {
    let key = FrameKey::new([2; 32]);
    let mut g = c.benchmark_group("chunk");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        for (name, data) in [("random", random(size)), ("text", texty(size))] {
            g.bench_with_input(BenchmarkId::new(format!("seal/{name}"), size), &data, |b, d| {
                b.iter(|| pipeline::seal_chunk(0, d, Compression::Zstd(3), &key, 0).expect("seal"));
            });
            let sealed =
                pipeline::seal_chunk(0, &data, Compression::Zstd(3), &key, 0).expect("seal");
            g.bench_with_input(BenchmarkId::new(format!("open/{name}"), size), &sealed, |b, s| {
                b.iter(|| {
                    pipeline::open_chunk(&key, 0, s.header, s.frame.to_vec(), 0, 8 << 20)
                        .expect("open")
                });
            });
        }
    }
    g.finish();
}

/// The path of one 1 MiB chunk through both sides, stage by stage, as the transfer runs
/// it (recycled buffers, zstd at the adaptive setting's first level, 1):
///
/// - `read`: from a file in the page cache into a recycled buffer;
/// - `hash`: blake3 of the chunk;
/// - `decide`: the level-1 sample that says whether zstd is worth trying;
/// - `seal/off`, `seal/zstd1`: hash, compress (or copy) and encrypt into a frame;
/// - `write`: the frame into a stream, in one write (a sink here: the transport's own
///   cost is not in this bench);
/// - `read_frame`: a frame from a stream into a recycled buffer;
/// - `open`: decrypt, decompress and verify;
/// - `send` and `receive`: each side's stages in a row, on one core.
fn frame_path(c: &mut Criterion) {
    const SIZE: usize = 1 << 20;
    let key = FrameKey::new([3; 32]);
    let pool = Pool::for_chunks(SIZE as u32);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Bytes(SIZE as u64));
    for (name, data) in [("random", random(SIZE)), ("text", texty(SIZE))] {
        let path = dir.path().join(name);
        std::fs::write(&path, &data).expect("write");
        let mut file = std::fs::File::open(&path).expect("open");
        let read_pool = pool.clone();
        let mut read = move || {
            file.seek(SeekFrom::Start(0)).expect("seek");
            let mut buf = read_pool.take_empty();
            let n = pipeline::read_chunk(&mut file, SIZE, &mut buf).expect("read");
            assert_eq!(n, SIZE);
            buf
        };
        g.bench_function(BenchmarkId::new("read", name), |b| b.iter(&mut read));
        g.bench_function(BenchmarkId::new("hash", name), |b| b.iter(|| blake3::hash(&data)));
        g.bench_function(BenchmarkId::new("decide", name), |b| {
            b.iter(|| pipeline::worth_compressing(&data))
        });
        let seal = |c: Compression| {
            pipeline::seal_chunk_into(0, &data, (c, true), &key, 0, pool.take()).expect("seal")
        };
        g.bench_function(BenchmarkId::new("seal/off", name), |b| b.iter(|| seal(Compression::Off)));
        let zstd1 = Compression::Zstd(1);
        g.bench_function(BenchmarkId::new("seal/zstd1", name), |b| b.iter(|| seal(zstd1)));
        let sealed = seal(zstd1);
        let wire = sealed.wire().to_vec();
        g.bench_function(BenchmarkId::new("write", name), |b| {
            b.iter(|| {
                block_on(pipeline::write_framed(&mut futures::io::sink(), sealed.header, &wire))
                    .expect("write")
            })
        });
        let read_frame = || {
            let mut r = futures::io::Cursor::new(&wire[..]);
            let mut buf = pool.take();
            let header = block_on(pipeline::read_frame_into(&mut r, buf.vec_mut(), u32::MAX))
                .expect("read")
                .expect("a frame");
            (header, buf)
        };
        g.bench_function(BenchmarkId::new("read_frame", name), |b| b.iter(read_frame));
        g.bench_function(BenchmarkId::new("open", name), |b| {
            b.iter_batched(
                read_frame,
                |(header, buf)| pipeline::open_chunk(&key, 0, header, buf, 0, SIZE as u32),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(BenchmarkId::new("send", name), |b| {
            b.iter(|| {
                let raw = read();
                let sealed =
                    pipeline::seal_chunk_into(0, &raw, (zstd1, true), &key, 0, pool.take())
                        .expect("seal");
                block_on(pipeline::write_framed(
                    &mut futures::io::sink(),
                    sealed.header,
                    sealed.wire(),
                ))
                .expect("write");
            })
        });
        g.bench_function(BenchmarkId::new("receive", name), |b| {
            b.iter(|| {
                let (header, buf) = read_frame();
                let chunk =
                    pipeline::open_chunk(&key, 0, header, buf, 0, SIZE as u32).expect("open");
                std::io::Write::write_all(&mut std::io::sink(), &chunk.data).expect("write");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, aead, hashing, compression, whole_chunk, frame_path);
criterion_main!(benches);
