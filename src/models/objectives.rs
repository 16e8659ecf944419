//! Loss functions of the three adversarial objectives and the WGAN-GP gradient penalty.
//!
//! Why free functions: they are the part of the paper most worth checking against hand-computed values, and a
//! function of (critic, real, fake) can be tested on a critic whose gradient is known analytically, without
//! building a network.

use tch::{Kind, Reduction, Tensor};

use super::error::ModelError;

/// Mean binary cross-entropy of `logits` against a constant target (1 = real, 0 = fake), computed from logits
/// (numerically stable, as `BCEWithLogitsLoss`).
pub fn bce_with_logits(logits: &Tensor, target: f64) -> Tensor {
    logits.binary_cross_entropy_with_logits::<Tensor>(&logits.full_like(target), None, None, Reduction::Mean)
}

/// Mean cross-entropy of class logits [B, C] against labels [B].
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.cross_entropy_for_logits(labels)
}

/// WGAN-GP gradient penalty λ·E[(‖∇ₓ̂ D(x̂)‖₂ − 1)²] at x̂ = α·real + (1−α)·fake (Gulrajani et al. 2017).
///
/// `critic` maps a batch to per-sample scores [B]; `alpha` holds one interpolation weight per sample ([B], in
/// [0, 1]; passed in so callers control the randomness). The gradient is taken with `create_graph`, so the returned
/// penalty can itself be back-propagated into the critic's parameters (double backward).
pub fn gradient_penalty(
    critic: impl Fn(&Tensor) -> Tensor,
    real: &Tensor,
    fake: &Tensor,
    alpha: &Tensor,
    lambda: f64,
) -> Result<Tensor, ModelError> {
    let err = ModelError::torch("gradient penalty");
    let b = real.size().first().copied().unwrap_or(0);
    let mut a_shape = vec![b];
    a_shape.extend(std::iter::repeat_n(1, real.dim().saturating_sub(1)));
    let a = alpha.f_to_kind(real.kind()).map_err(&err)?.f_view(a_shape.as_slice()).map_err(&err)?;
    let one_minus: Tensor = 1.0 - &a;
    let mixed: Tensor = real.detach() * &a + fake.detach() * one_minus;
    let interp = mixed.set_requires_grad(true);
    let scores = critic(&interp);
    let grads = Tensor::f_run_backward(&[scores.sum(Kind::Float)], &[&interp], true, true).map_err(&err)?;
    let g = grads.first().ok_or_else(|| ModelError::Torch {
        context: "gradient penalty".into(),
        message: "autograd returned no gradient".into(),
    })?;
    let norm = (g.flatten(1, -1).square().sum_dim_intlist([1i64].as_slice(), false, Kind::Float) + 1e-12).sqrt();
    Ok((norm - 1.0).square().mean(Kind::Float) * lambda)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn gradient_penalty_matches_linear_critic() {
        tch::set_num_threads(1);
        // f(x) = Σ w·x per sample: ∇f = w everywhere, so GP = λ(‖w‖ − 1)² whatever α, real and fake are.
        let w = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.25, 1.5, -0.75]).view([1, 6]);
        let wn = w.square().sum(Kind::Float).sqrt().double_value(&[]);
        let real = Tensor::from_slice(&(0..12).map(|i| i as f32 * 0.1).collect::<Vec<_>>()).view([2, 6]);
        let fake = real.neg();
        let alpha = Tensor::from_slice(&[0.3f32, 0.9]);
        let critic = |x: &Tensor| (x * &w).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        let gp = gradient_penalty(critic, &real, &fake, &alpha, 10.0).unwrap().double_value(&[]);
        let expected = 10.0 * (wn - 1.0).powi(2);
        assert!((gp - expected).abs() < 1e-4 * expected.max(1.0), "gp {gp} expected {expected}");

        // Image-shaped inputs and a quadratic critic f(x) = ½‖x‖²: ∇f = x̂, so GP = λ·mean((‖x̂‖ − 1)²).
        let real = Tensor::ones([3, 1, 2, 2], (Kind::Float, Device::Cpu));
        let fake = Tensor::zeros([3, 1, 2, 2], (Kind::Float, Device::Cpu));
        let alpha = Tensor::from_slice(&[0.0f32, 0.5, 1.0]);
        let critic = |x: &Tensor| x.square().sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Float) * 0.5;
        let gp = gradient_penalty(critic, &real, &fake, &alpha, 1.0).unwrap();
        // ‖x̂‖ = 2α: 0, 1, 2 → (−1)², 0², 1² → mean 2/3.
        assert!((gp.double_value(&[]) - 2.0 / 3.0).abs() < 1e-5);
    }

    #[test]
    fn penalty_is_differentiable_wrt_critic_parameters() {
        tch::set_num_threads(1);
        let w = Tensor::from_slice(&[2.0f32, 0.0]).view([1, 2]).set_requires_grad(true);
        let real = Tensor::from_slice(&[1.0f32, 1.0]).view([1, 2]);
        let fake = real.zeros_like();
        let critic = |x: &Tensor| (x * &w).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        let gp = gradient_penalty(critic, &real, &fake, &Tensor::from_slice(&[0.5f32]), 1.0).unwrap();
        gp.backward();
        // GP = (‖w‖ − 1)², d/dw = 2(‖w‖ − 1)·w/‖w‖ = 2·1·(1, 0).
        let g = w.grad();
        assert!((g.double_value(&[0, 0]) - 2.0).abs() < 1e-5 && g.double_value(&[0, 1]).abs() < 1e-6);
    }

    #[test]
    fn bce_and_ce_values() {
        let logits = Tensor::from_slice(&[0.0f32, 0.0]);
        assert!((bce_with_logits(&logits, 1.0).double_value(&[]) - 2f64.ln()).abs() < 1e-6);
        let cl = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 0.0]).view([1, 4]);
        let y = Tensor::from_slice(&[2i64]);
        assert!((cross_entropy(&cl, &y).double_value(&[]) - 4f64.ln()).abs() < 1e-6);
    }
}
