//! PNG row filters (the PDF "Predictor 15" family) and zlib packing of filtered rows.
//!
//! PDF's Flate predictors 10 to 15 are PNG's five row filters: each row is stored as one filter
//! byte followed by the row's bytes, each minus a prediction from its left, upper or upper-left
//! neighbour. `/Predictor 15` lets the writer pick the filter row by row, so the reader follows
//! whatever byte it finds. The same code serves the checker, which has to undo the filters to
//! prove that an image's data has exactly the size its dictionary claims.

use std::io::Write;

use flate2::write::ZlibEncoder;

/// The PNG row filter types, numbered as they are stored in front of each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowFilter {
    None = 0,
    Sub = 1,
    Up = 2,
    Average = 3,
    Paeth = 4,
}

/// How the encoder picks each row's filter. The page writer's choice, with the figures that
/// led to it, is documented on its `strategy` function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterStrategy {
    /// One filter for every row.
    Fixed(RowFilter),
    /// Per row, the filter whose output has the smallest sum of absolute values (read as signed
    /// bytes): libpng's heuristic, which costs all five filters on every row. Kept for the
    /// measurements; the page writer does not use it (2 to 3 times slower than `Up`).
    #[cfg_attr(not(test), allow(dead_code))]
    MinSumAbs,
}

/// The zlib level used for page images.
///
/// Measured on real pages rendered at 150 ppi (`pdf-uvm 150 < doc.pdf | cargo run --release
/// -p converter-core --example encode_stream`), whole `encode_page` per page (colour analysis,
/// row filter, deflate, digest), on this 2-core machine, two runs each, quiet machine:
///
/// | | R-exts (236 gray text pages) | ReportLab guide (134 gray and RGB pages) |
/// |---|---|---|
/// | zlib-rs level 1 | 3.3 to 3.4 ms, 217 KB | 4.1 to 4.2 ms, 310 KB |
/// | **zlib-rs level 2** | **4.6 ms, 186 KB** | **5.4 to 5.5 ms, 258 KB** |
/// | zlib-rs level 3 | 5.1 ms, 184 KB | 6.0 to 6.1 ms, 255 KB |
///
/// Level 2 costs 1 to 1.5 % in size against level 3 for a tenth less time; level 1 is faster
/// still but a sixth larger, and small output is half the point of a lossless page. An earlier
/// run put level 6 at about twice level 3's time for 1 to 2 % less size, and fdeflate (the png
/// crate's compressor) as fast as level 1 but far larger.
pub(crate) const FLATE_LEVEL: u32 = 2;

/// Writes rows through a PNG row filter into a zlib stream held in memory.
pub(crate) struct RowPacker {
    /// Bytes per complete pixel, at least 1: the distance to the "left" neighbour.
    bpp: usize,
    strategy: FilterStrategy,
    previous: Vec<u8>,
    filtered: Vec<u8>,
    /// Scratch rows for [`FilterStrategy::MinSumAbs`], one per candidate filter.
    candidates: Vec<Vec<u8>>,
    zlib: ZlibEncoder<Vec<u8>>,
}

impl RowPacker {
    /// A packer for rows of `row_bytes` bytes with `bpp` bytes per pixel.
    pub(crate) fn new(row_bytes: usize, bpp: usize, strategy: FilterStrategy) -> RowPacker {
        let candidates = match strategy {
            FilterStrategy::Fixed(_) => Vec::new(),
            FilterStrategy::MinSumAbs => vec![vec![0; row_bytes]; 5],
        };
        RowPacker {
            bpp: bpp.max(1),
            strategy,
            previous: vec![0; row_bytes],
            filtered: vec![0; row_bytes.saturating_add(1)],
            candidates,
            zlib: ZlibEncoder::new(Vec::new(), flate2::Compression::new(FLATE_LEVEL)),
        }
    }

    /// Filters and compresses one row, which must be `row_bytes` long.
    pub(crate) fn push_row(&mut self, row: &[u8]) -> std::io::Result<()> {
        let n = self.previous.len();
        if row.len() != n {
            return Err(std::io::Error::other(
                "row length differs from the declared width",
            ));
        }
        match self.strategy {
            FilterStrategy::Fixed(filter) => {
                let (head, body) = self.filtered.split_at_mut(1);
                head[0] = filter as u8;
                apply(filter, self.bpp, row, &self.previous, body);
                self.zlib.write_all(&self.filtered)?;
            }
            FilterStrategy::MinSumAbs => {
                let mut best = (u64::MAX, 0);
                for (index, filter) in ALL_FILTERS.iter().enumerate() {
                    let Some(out) = self.candidates.get_mut(index) else {
                        continue;
                    };
                    apply(*filter, self.bpp, row, &self.previous, out);
                    let cost: u64 = out
                        .iter()
                        .map(|&b| u64::from((b as i8).unsigned_abs()))
                        .sum();
                    if cost < best.0 {
                        best = (cost, index);
                    }
                }
                let filter = ALL_FILTERS.get(best.1).copied().unwrap_or(RowFilter::None);
                let chosen = self
                    .candidates
                    .get(best.1)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                self.zlib.write_all(&[filter as u8])?;
                self.zlib.write_all(chosen)?;
            }
        }
        self.previous.copy_from_slice(row);
        Ok(())
    }

    /// Ends the zlib stream and returns it.
    pub(crate) fn finish(self) -> std::io::Result<Vec<u8>> {
        self.zlib.finish()
    }
}

const ALL_FILTERS: [RowFilter; 5] = [
    RowFilter::None,
    RowFilter::Sub,
    RowFilter::Up,
    RowFilter::Average,
    RowFilter::Paeth,
];

/// Filters `row` against `above` into `out` (all three the same length).
fn apply(filter: RowFilter, bpp: usize, row: &[u8], above: &[u8], out: &mut [u8]) {
    match filter {
        RowFilter::None => out.copy_from_slice(row),
        RowFilter::Up => {
            for ((o, &x), &b) in out.iter_mut().zip(row).zip(above) {
                *o = x.wrapping_sub(b);
            }
        }
        RowFilter::Sub => {
            for (i, (o, &x)) in out.iter_mut().zip(row).enumerate() {
                let a = if i >= bpp {
                    row.get(i - bpp).copied().unwrap_or(0)
                } else {
                    0
                };
                *o = x.wrapping_sub(a);
            }
        }
        RowFilter::Average => {
            for (i, ((o, &x), &b)) in out.iter_mut().zip(row).zip(above).enumerate() {
                let a = if i >= bpp {
                    row.get(i - bpp).copied().unwrap_or(0)
                } else {
                    0
                };
                *o = x.wrapping_sub(((u16::from(a) + u16::from(b)) / 2) as u8);
            }
        }
        RowFilter::Paeth => {
            for (i, ((o, &x), &b)) in out.iter_mut().zip(row).zip(above).enumerate() {
                let (a, c) = if i >= bpp {
                    (
                        row.get(i - bpp).copied().unwrap_or(0),
                        above.get(i - bpp).copied().unwrap_or(0),
                    )
                } else {
                    (0, 0)
                };
                *o = x.wrapping_sub(paeth(a, b, c));
            }
        }
    }
}

/// The Paeth predictor: whichever of left, up and upper-left is closest to `a + b - c`.
fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let (ia, ib, ic) = (i16::from(a), i16::from(b), i16::from(c));
    let pa = (ib - ic).abs();
    let pb = (ia - ic).abs();
    let pc = (ia + ib - 2 * ic).abs();
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

/// Undoes the row filters of `data` (rows of `1 + row_bytes` bytes) in place of a new buffer.
///
/// Returns `None` when the data is not a whole number of rows or a row names an unknown filter.
pub(crate) fn unfilter(data: &[u8], row_bytes: usize, bpp: usize) -> Option<Vec<u8>> {
    let stride = row_bytes.checked_add(1)?;
    if data.len() % stride != 0 {
        return None;
    }
    let bpp = bpp.max(1);
    let mut out = Vec::with_capacity(data.len() - data.len() / stride);
    let mut above = vec![0u8; row_bytes];
    let mut row = vec![0u8; row_bytes];
    for stored in data.chunks_exact(stride) {
        let (&kind, body) = stored.split_first()?;
        for i in 0..row_bytes {
            let x = *body.get(i)?;
            let a = if i >= bpp { *row.get(i - bpp)? } else { 0 };
            let b = *above.get(i)?;
            let c = if i >= bpp { *above.get(i - bpp)? } else { 0 };
            let value = match kind {
                0 => x,
                1 => x.wrapping_add(a),
                2 => x.wrapping_add(b),
                3 => x.wrapping_add(((u16::from(a) + u16::from(b)) / 2) as u8),
                4 => x.wrapping_add(paeth(a, b, c)),
                _ => return None,
            };
            *row.get_mut(i)? = value;
        }
        out.extend_from_slice(&row);
        std::mem::swap(&mut row, &mut above);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_rows() -> Vec<Vec<u8>> {
        (0..7u8)
            .map(|y| {
                (0..12u8)
                    .map(|x| x.wrapping_mul(37).wrapping_add(y.wrapping_mul(91)))
                    .collect()
            })
            .collect()
    }

    fn inflate(data: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn every_fixed_filter_round_trips() {
        let rows = sample_rows();
        for filter in ALL_FILTERS {
            let mut packer = RowPacker::new(12, 3, FilterStrategy::Fixed(filter));
            for row in &rows {
                packer.push_row(row).unwrap();
            }
            let restored = unfilter(&inflate(&packer.finish().unwrap()), 12, 3).unwrap();
            assert_eq!(restored, rows.concat(), "{filter:?}");
        }
    }

    #[test]
    fn min_sum_abs_round_trips() {
        let rows = sample_rows();
        let mut packer = RowPacker::new(12, 3, FilterStrategy::MinSumAbs);
        for row in &rows {
            packer.push_row(row).unwrap();
        }
        let restored = unfilter(&inflate(&packer.finish().unwrap()), 12, 3).unwrap();
        assert_eq!(restored, rows.concat());
    }

    #[test]
    fn unfilter_rejects_unknown_filter_byte() {
        assert_eq!(unfilter(&[5, 1, 2], 2, 1), None);
    }

    #[test]
    fn unfilter_rejects_partial_row() {
        assert_eq!(unfilter(&[0, 1, 2, 0], 2, 1), None);
    }

    #[test]
    fn push_row_rejects_wrong_length() {
        let mut packer = RowPacker::new(4, 1, FilterStrategy::Fixed(RowFilter::Up));
        assert!(packer.push_row(&[1, 2, 3]).is_err());
    }
}
