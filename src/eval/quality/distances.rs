//! Chunked Euclidean distances: k nearest neighbours, manifold membership and mean pairwise distance.
//!
//! Why chunked: the quality metrics compare thousands of samples with thousands of others, in feature space and in
//! pixel space (12 288 values per 64×64 image). A full N×M distance matrix, or the reference set converted to f64 in
//! one piece, does not fit comfortably in memory; here only a `chunk × chunk` block of distances and two chunks of
//! rows exist at any time, and a running top-k is merged across reference chunks.
//!
//! Why f64 and the ‖a‖² + ‖b‖² − 2a·b form: the matrix product makes it fast, and f64 keeps the cancellation error far
//! below the distances that matter (an exact copy of a training image must come out as ~0, not as f32 noise).

use tch::{Device, Kind, Tensor};

use super::{guard, QualityError};

/// Rows `start..start + len` of `x`, flattened to [len, D], as f64 on `device`.
fn rows_f64(x: &Tensor, start: i64, len: i64, device: Device) -> Tensor {
    x.narrow(0, start, len).flatten(1, -1).to_device(device).to_kind(Kind::Double)
}

/// Squared norms of rows as [n, 1].
fn sq_norms(x: &Tensor) -> Tensor {
    x.square().sum_dim_intlist([1i64].as_slice(), true, Kind::Double)
}

/// Euclidean distances [a, b] between the rows of `q` and `r` (both f64), given their squared norms [a,1] and [b,1].
fn block(q: &Tensor, q_sq: &Tensor, r: &Tensor, r_sq: &Tensor) -> Tensor {
    (q_sq + r_sq.transpose(0, 1) - q.matmul(&r.transpose(0, 1)) * 2.0).clamp_min(0.0).sqrt()
}

fn starts(n: i64, chunk: i64) -> impl Iterator<Item = (i64, i64)> {
    (0..n).step_by(chunk.max(1) as usize).map(move |s| (s, chunk.max(1).min(n - s)))
}

/// The `k` nearest rows of `refs` for every row of `queries` (k clamped to the number of references).
#[derive(Debug)]
pub struct Knn {
    /// [M, k] f64 distances, ascending along each row.
    pub distances: Tensor,
    /// [M, k] i64 indices into `refs`.
    pub indices: Tensor,
}

/// k nearest neighbours of each query row among the reference rows (any shape [N, ...], flattened), computed on the
/// device of `queries` in chunks of `chunk` rows. With `refs` the same set as `queries`, each row finds itself first.
pub fn knn(queries: &Tensor, refs: &Tensor, k: usize, chunk: usize) -> Result<Knn, QualityError> {
    guard("k nearest neighbours", || {
        let _g = tch::no_grad_guard();
        let dev = queries.device();
        let (m, n) = (queries.size()[0], refs.size()[0]);
        let k = (k as i64).min(n);
        let chunk = chunk.max(1) as i64;
        let mut dists = Vec::new();
        let mut idxs = Vec::new();
        for (qs, ql) in starts(m, chunk) {
            let q = rows_f64(queries, qs, ql, dev);
            let q_sq = sq_norms(&q);
            let mut best: Option<(Tensor, Tensor)> = None;
            for (rs, rl) in starts(n, chunk) {
                let r = rows_f64(refs, rs, rl, dev);
                let d = block(&q, &q_sq, &r, &sq_norms(&r));
                let idx = Tensor::arange_start(rs, rs + rl, (Kind::Int64, dev)).unsqueeze(0).expand([ql, rl], false);
                let (cd, ci) = match best.take() {
                    Some((bd, bi)) => (Tensor::cat(&[bd, d], 1), Tensor::cat(&[bi, idx], 1)),
                    None => (d, idx),
                };
                let kk = k.min(cd.size()[1]);
                let (td, pos) = cd.topk(kk, 1, false, true);
                best = Some((td, ci.gather(1, &pos, false)));
            }
            if let Some((d, i)) = best {
                dists.push(d);
                idxs.push(i);
            }
        }
        if dists.is_empty() {
            return Ok(Knn {
                distances: Tensor::zeros([m, k], (Kind::Double, dev)),
                indices: Tensor::zeros([m, k], (Kind::Int64, dev)),
            });
        }
        Ok(Knn { distances: Tensor::cat(&dists, 0), indices: Tensor::cat(&idxs, 0) })
    })
}

/// For every query row: is it within `radii[j]` of some reference row j? (Kynkäänniemi et al.'s manifold test.)
pub fn in_manifold(queries: &Tensor, refs: &Tensor, radii: &Tensor, chunk: usize) -> Result<Vec<bool>, QualityError> {
    guard("manifold membership", || {
        let _g = tch::no_grad_guard();
        let dev = queries.device();
        let (m, n) = (queries.size()[0], refs.size()[0]);
        let chunk = chunk.max(1) as i64;
        let radii = radii.to_device(dev).to_kind(Kind::Double);
        let mut out = Vec::with_capacity(m as usize);
        for (qs, ql) in starts(m, chunk) {
            let q = rows_f64(queries, qs, ql, dev);
            let q_sq = sq_norms(&q);
            let mut hit = Tensor::zeros([ql], (Kind::Bool, dev));
            for (rs, rl) in starts(n, chunk) {
                let r = rows_f64(refs, rs, rl, dev);
                let d = block(&q, &q_sq, &r, &sq_norms(&r));
                let inside = d.le_tensor(&radii.narrow(0, rs, rl).unsqueeze(0)).any_dim(1, false);
                hit = hit.logical_or(&inside);
            }
            out.extend(to_vec::<bool>(&hit)?);
        }
        Ok(out)
    })
}

/// Mean Euclidean distance over all ordered pairs of distinct rows (None for fewer than 2 rows).
pub fn mean_pairwise_distance(x: &Tensor, chunk: usize) -> Result<Option<f64>, QualityError> {
    let n = x.size()[0];
    if n < 2 {
        return Ok(None);
    }
    guard("mean pairwise distance", || {
        let _g = tch::no_grad_guard();
        let dev = x.device();
        let chunk = chunk.max(1) as i64;
        let mut total = 0.0;
        for (qs, ql) in starts(n, chunk) {
            let q = rows_f64(x, qs, ql, dev);
            let q_sq = sq_norms(&q);
            for (rs, rl) in starts(n, chunk) {
                let r = rows_f64(x, rs, rl, dev);
                // The diagonal is ~0 up to rounding; it adds nothing measurable to the sum.
                total += block(&q, &q_sq, &r, &sq_norms(&r)).sum(Kind::Double).double_value(&[]);
            }
        }
        Ok(Some(total / (n * (n - 1)) as f64))
    })
}

/// A 1-D (or any, flattened) tensor as a CPU vector.
pub(crate) fn to_vec<T: tch::kind::Element + Copy>(t: &Tensor) -> Result<Vec<T>, QualityError> {
    Vec::<T>::try_from(&t.flatten(0, -1).to_device(Device::Cpu))
        .map_err(|e| QualityError::Torch { context: "tensor to vector".into(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], rows: i64) -> Tensor {
        Tensor::from_slice(v).view([rows, -1])
    }

    #[test]
    fn knn_matches_brute_force_across_chunks() {
        tch::set_num_threads(1);
        let q = t(&[0.0, 0.0, 10.0, 0.0, 3.0, 4.0], 3);
        let r = t(&[1.0, 0.0, 0.0, 2.0, 9.0, 0.0, 3.0, 4.5, -5.0, -5.0], 5);
        for chunk in [1, 2, 3, 100] {
            let nn = knn(&q, &r, 2, chunk).unwrap();
            assert_eq!(to_vec::<i64>(&nn.indices).unwrap(), vec![0, 1, 2, 3, 3, 1], "chunk {chunk}");
            let d = to_vec::<f64>(&nn.distances).unwrap();
            assert!((d[0] - 1.0).abs() < 1e-9 && (d[1] - 2.0).abs() < 1e-9 && (d[4] - 0.5).abs() < 1e-9, "{d:?}");
        }
        // k larger than the references is clamped.
        assert_eq!(knn(&q, &r.narrow(0, 0, 1), 3, 2).unwrap().indices.size(), vec![3, 1]);
    }

    #[test]
    fn manifold_and_mean_pairwise() {
        tch::set_num_threads(1);
        let r = t(&[0.0, 0.0, 10.0, 0.0], 2);
        let radii = Tensor::from_slice(&[1.0f64, 0.5]);
        let q = t(&[0.5, 0.5, 10.0, 0.6, 10.4, 0.0, 5.0, 5.0], 4);
        assert_eq!(in_manifold(&q, &r, &radii, 1).unwrap(), vec![true, false, true, false]);
        let x = t(&[0.0, 0.0, 3.0, 4.0, 0.0, 0.0], 3);
        let mean = mean_pairwise_distance(&x, 2).unwrap().unwrap();
        assert!((mean - 20.0 / 6.0).abs() < 1e-9, "{mean}");
        assert_eq!(mean_pairwise_distance(&x.narrow(0, 0, 1), 2).unwrap(), None);
    }
}
