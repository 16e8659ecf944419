//! Tests of the objectives' switches (the ACGAN class head and class weight, WGAN-GP's lazy penalty): each checks the
//! loss of the first step against the same networks, batch and noise with the switch at its paper value, so the
//! difference is the switch's term and nothing else. Apart from `tests.rs` to keep each file one subject.

use tch::Device;

use super::config::{DiscKind, GanKind, ModelConfig};
use super::gan::Gan;
use super::tests::{tiny, toy_batch};

#[test]
fn an_acgan_whose_class_head_learns_from_real_images_only_drops_the_generated_images_class_loss() {
    tch::set_num_threads(1);
    let (x, y) = toy_batch(8, 4, 32, 1);
    let first_d_loss = |fake_class: bool| {
        let mut cfg = tiny(GanKind::Acgan, DiscKind::Cnn);
        cfg.acgan_fake_class = fake_class;
        let mut g = Gan::new(&cfg, Device::Cpu, 5).unwrap();
        g.train_step(&x, &y).unwrap().d_loss
    };
    let (paper, real_only) = (first_d_loss(true), first_d_loss(false));
    // The same networks, batch and noise before the first update: the difference is the class loss on the fakes.
    assert!(paper > real_only + 0.1, "paper {paper} vs real-only {real_only}");
    // The paper's setting leaves no trace in the serialised configuration (stored keys stay); the other one does.
    let mut cfg = tiny(GanKind::Acgan, DiscKind::Cnn);
    assert!(!serde_json::to_string(&cfg).unwrap().contains("acgan_fake_class"));
    cfg.acgan_fake_class = false;
    let json = serde_json::to_string(&cfg).unwrap();
    assert!(json.contains("\"acgan_fake_class\":false"));
    assert!(!serde_json::from_str::<ModelConfig>(&json).unwrap().acgan_fake_class);
}

#[test]
fn a_lazy_gradient_penalty_is_taken_on_every_nth_critic_step_at_n_times_the_weight() {
    tch::set_num_threads(1);
    let (x, y) = toy_batch(8, 4, 32, 3);
    let run = |every: i64| {
        let mut cfg = tiny(GanKind::WganGp, DiscKind::Cnn);
        (cfg.n_critic, cfg.gp_every) = (1, every);
        let mut g = Gan::new(&cfg, Device::Cpu, 11).unwrap();
        (0..4).map(|_| g.train_step(&x, &y).unwrap()).collect::<Vec<_>>()
    };
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
    // Absent from the serialised form at 1 (stored keys stay); a bad value names the field.
    let mut cfg = tiny(GanKind::WganGp, DiscKind::Cnn);
    assert!(!serde_json::to_string(&cfg).unwrap().contains("gp_every"));
    cfg.gp_every = 4;
    assert_eq!(serde_json::from_str::<ModelConfig>(&serde_json::to_string(&cfg).unwrap()).unwrap().gp_every, 4);
    cfg.gp_every = 0;
    assert!(cfg.validate().unwrap_err().to_string().contains("gp_every"));
}

#[test]
fn the_acgan_class_weight_scales_the_class_term_of_the_generator_loss_only() {
    tch::set_num_threads(1);
    let (x, y) = toy_batch(8, 4, 32, 1);
    let first_step = |w: f64| {
        let mut cfg = tiny(GanKind::Acgan, DiscKind::Cnn);
        cfg.acgan_class_weight = w;
        let mut g = Gan::new(&cfg, Device::Cpu, 5).unwrap();
        g.train_step(&x, &y).unwrap()
    };
    let (one, two, three) = (first_step(1.0), first_step(2.0), first_step(3.0));
    assert_eq!(one.d_loss, three.d_loss, "the discriminator's loss does not change");
    // The same networks, batch and noise: the generator's loss grows by the class term for each unit of weight.
    let ce = two.g_loss - one.g_loss;
    assert!(ce > 0.1, "class term {ce}");
    assert!((three.g_loss - one.g_loss - 2.0 * ce).abs() < 1e-4 * ce.max(1.0), "{one:?} {three:?}");
    let mut cfg = tiny(GanKind::Acgan, DiscKind::Cnn);
    assert!(!serde_json::to_string(&cfg).unwrap().contains("acgan_class_weight"));
    cfg.acgan_class_weight = 3.0;
    assert_eq!(
        serde_json::from_str::<ModelConfig>(&serde_json::to_string(&cfg).unwrap()).unwrap().acgan_class_weight,
        3.0
    );
    cfg.acgan_class_weight = f64::NAN;
    assert!(cfg.validate().unwrap_err().to_string().contains("acgan_class_weight"));
}
