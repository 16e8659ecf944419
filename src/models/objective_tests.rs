//! Tests of the objectives' switches (the ACGAN class head and class weight, WGAN-GP's lazy penalty): each checks the
//! loss of the first step against the same networks, batch and noise with the switch at its paper value, so the
//! difference is the switch's term and nothing else. Apart from `tests.rs` to keep each file one subject.

use tch::Device;

use super::config::{DiscKind, GanKind, ModelConfig};
use super::gan::{Gan, StepLosses};
use super::tests::{tiny, toy_batch};

/// The losses of the first `steps` steps of a tiny `gan` × CNN-D (GAN seed 5) with `set` applied, on one toy batch.
fn steps_with(gan: GanKind, steps: usize, set: impl Fn(&mut ModelConfig)) -> Vec<StepLosses> {
    tch::set_num_threads(1);
    let (x, y) = toy_batch(8, 4, 32, 1);
    let mut cfg = tiny(gan, DiscKind::Cnn);
    set(&mut cfg);
    let mut g = Gan::new(&cfg, Device::Cpu, 5).unwrap();
    (0..steps).map(|_| g.train_step(&x, &y).unwrap()).collect()
}

/// The switch at its paper value leaves no trace in the serialised configuration (stored keys and hashes stay); set
/// to `other` it does and reads back.
fn serialised_only_when_set(
    gan: GanKind,
    key: &str,
    set: impl Fn(&mut ModelConfig),
    read: impl Fn(&ModelConfig) -> String,
) {
    let mut cfg = tiny(gan, DiscKind::Cnn);
    assert!(!serde_json::to_string(&cfg).unwrap().contains(key), "{key} at its paper value");
    set(&mut cfg);
    let json = serde_json::to_string(&cfg).unwrap();
    assert!(json.contains(key), "{json}");
    assert_eq!(read(&serde_json::from_str::<ModelConfig>(&json).unwrap()), read(&cfg), "{key} reads back");
}

#[test]
fn an_acgan_whose_class_head_learns_from_real_images_only_drops_the_generated_images_class_loss() {
    let first_d_loss = |fake_class: bool| steps_with(GanKind::Acgan, 1, |c| c.acgan_fake_class = fake_class)[0].d_loss;
    let (paper, real_only) = (first_d_loss(true), first_d_loss(false));
    // The same networks, batch and noise before the first update: the difference is the class loss on the fakes.
    assert!(paper > real_only + 0.1, "paper {paper} vs real-only {real_only}");
    serialised_only_when_set(
        GanKind::Acgan,
        "acgan_fake_class",
        |c| c.acgan_fake_class = false,
        |c| c.acgan_fake_class.to_string(),
    );
}

#[test]
fn a_lazy_gradient_penalty_is_taken_on_every_nth_critic_step_at_n_times_the_weight() {
    let run = |every: i64| steps_with(GanKind::WganGp, 4, |c| (c.n_critic, c.gp_every) = (1, every));
    let (each, lazy) = (run(1), run(2));
    assert!(each.iter().all(|l| l.gp.is_some()));
    let taken: Vec<bool> = lazy.iter().map(|l| l.gp.is_some()).collect();
    assert_eq!(taken, [true, false, true, false], "critic steps 0 and 2 of 4 take the penalty");
    // The first step is the same networks, batch, noise and interpolation: the penalty is reported at λ in both, and
    // the lazy critic loss holds it twice.
    let (p1, p2) = (each[0].gp.unwrap(), lazy[0].gp.unwrap());
    assert!(p1 > 1e-3 && (p1 - p2).abs() < 1e-4 * p1.max(1.0), "the penalty at λ: {p1} vs {p2}");
    let extra = lazy[0].d_loss - each[0].d_loss;
    assert!((extra - p1).abs() < 1e-3 * p1.max(1.0), "the lazy loss holds 2·penalty: extra {extra}, penalty {p1}");
    serialised_only_when_set(GanKind::WganGp, "gp_every", |c| c.gp_every = 4, |c| c.gp_every.to_string());
    // A bad value names the field.
    let mut cfg = tiny(GanKind::WganGp, DiscKind::Cnn);
    cfg.gp_every = 0;
    assert!(cfg.validate().unwrap_err().to_string().contains("gp_every"));
}

#[test]
fn the_acgan_class_weight_scales_the_class_term_of_the_generator_loss_only() {
    let first_step = |w: f64| steps_with(GanKind::Acgan, 1, |c| c.acgan_class_weight = w).remove(0);
    let (one, two, three) = (first_step(1.0), first_step(2.0), first_step(3.0));
    assert_eq!(one.d_loss, three.d_loss, "the discriminator's loss does not change");
    // The same networks, batch and noise: the generator's loss grows by the class term for each unit of weight.
    let ce = two.g_loss - one.g_loss;
    assert!(ce > 0.1, "class term {ce}");
    assert!((three.g_loss - one.g_loss - 2.0 * ce).abs() < 1e-4 * ce.max(1.0), "{one:?} {three:?}");
    serialised_only_when_set(
        GanKind::Acgan,
        "acgan_class_weight",
        |c| c.acgan_class_weight = 3.0,
        |c| c.acgan_class_weight.to_string(),
    );
    let mut cfg = tiny(GanKind::Acgan, DiscKind::Cnn);
    cfg.acgan_class_weight = f64::NAN;
    assert!(cfg.validate().unwrap_err().to_string().contains("acgan_class_weight"));
}
