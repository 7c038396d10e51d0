//! Throughput of the per-chunk work: AEAD seal/open, blake3, zstd by level, and the
//! whole chunk pipeline (hash + compress + seal, and open + decompress + verify), over
//! chunk sizes, on random (incompressible) and text-like (compressible) data.
//!
//! Run: `cargo bench --bench pipeline`. These call the library, never the binary.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pcp::Compression;
use pcp::bench::{self as pipeline, FrameKey};

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

criterion_group!(benches, aead, hashing, compression, whole_chunk);
criterion_main!(benches);
