//! `Gan`: one generator + one discriminator with their optimisers, trained by the configured objective.
//!
//! Why one owner type: the actor layer needs a single Send value it can move onto a worker thread, step, snapshot
//! (`weights`) and overwrite (`load_weights`) — the units of federated training. All randomness comes from the
//! model's own seeded stream (see `rng.rs`), so a (config, seed, data) triple fixes the trajectory on one thread.

use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

use super::config::{GanKind, ModelConfig, SourceLoss};
use super::convert::{load_stores, stores_to_weights};
use super::diffaugment::diff_augment;
use super::discriminator::{DiscOutput, Discriminator};
use super::error::{catch_torch, ModelError};
use super::generator::Generator;
use super::init::init_varstore;
use super::objectives::{bce_with_logits, cross_entropy, gradient_penalty};
use super::rng::SeededRng;
use crate::federation::weights::Weights;

/// Name prefixes of the two networks inside [`Gan::weights`].
pub const GENERATOR_PREFIX: &str = "generator.";
pub const DISCRIMINATOR_PREFIX: &str = "discriminator.";
/// Inside the generator's variables: the prefix of its exponential moving average (when `ema_decay > 0`). It sits
/// under [`GENERATOR_PREFIX`] so that everything that moves "the generator" (checkpoint parts, the wire, the
/// stand-alone generator file) moves the average with it, and FedAvg averages it like any other variable.
pub const EMA_PREFIX: &str = "ema.";

/// Forward passes of [`Gan::settle_generator_statistics`]: with BatchNorm's momentum of 0.1 the initial values keep
/// 0.9⁶⁴ ≈ 0.1 % of the estimate.
pub const STANDING_BATCHES: i64 = 64;
/// Latent vectors per forward pass of [`Gan::settle_generator_statistics`].
const STANDING_BATCH: i64 = 64;

/// Losses and diagnostics of one training step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLosses {
    /// Discriminator (critic) loss of the last critic step, including the gradient penalty.
    pub d_loss: f64,
    /// Generator loss.
    pub g_loss: f64,
    /// Mean discriminator score (logit / critic value) on the real batch in the last critic step.
    pub d_real: f64,
    /// Mean discriminator score on the fake batch in the last critic step.
    pub d_fake: f64,
    /// Gradient penalty (WGAN-GP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gp: Option<f64>,
    /// Auxiliary-classifier accuracy on the real batch (ACGAN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aux_acc: Option<f64>,
    /// FedProx proximal term μ/2·‖w − w_global‖² over both networks, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prox: Option<f64>,
}

/// FedProx anchor: the weights the proximal term pulls towards.
struct Proximal {
    mu: f64,
    g_anchor: Vec<(Tensor, Tensor)>,
    d_anchor: Vec<(Tensor, Tensor)>,
}

fn snapshot(vs: &VarStore) -> Vec<(Tensor, Tensor)> {
    let _g = tch::no_grad_guard();
    vs.trainable_variables()
        .into_iter()
        .map(|v| {
            let anchor = v.detach().copy();
            (v, anchor)
        })
        .collect()
}

/// The exponential moving average of the generator (Yazici et al. 2018): a second generator whose variables
/// follow the trained one's, `ema ← d·ema + (1 − d)·g` after every generator step, with the warm-up
/// d_t = min(d, (1 + t)/(10 + t)) so that a short run's average is not dominated by the random initial weights.
/// BatchNorm running statistics are averaged the same way. Sampling (`generate`) uses the average.
struct Ema {
    vs: VarStore,
    generator: Generator,
    decay: f64,
    /// (trained variable, its average), in name order.
    pairs: Vec<(Tensor, Tensor)>,
}

impl Ema {
    fn new(cfg: &ModelConfig, device: Device, g_vs: &VarStore, seed: i64) -> Result<Option<Self>, ModelError> {
        if cfg.ema_decay <= 0.0 {
            return Ok(None);
        }
        let vs = VarStore::new(device);
        let generator = Generator::new(&vs.root(), cfg);
        init_varstore(&vs, seed)?;
        let live = g_vs.variables();
        let mut avg: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        avg.sort_by(|a, b| a.0.cmp(&b.0));
        let mut pairs = Vec::with_capacity(avg.len());
        for (name, a) in avg {
            let g = live.get(&name).ok_or_else(|| ModelError::Weights(format!("EMA variable {name} has no twin")))?;
            pairs.push((g.shallow_clone(), a));
        }
        let ema = Ema { vs, generator, decay: cfg.ema_decay, pairs };
        ema.copy_from_live();
        Ok(Some(ema))
    }

    fn copy_from_live(&self) {
        let _g = tch::no_grad_guard();
        for (g, a) in &self.pairs {
            a.shallow_clone().copy_(g);
        }
    }

    fn update(&self, step: u64) {
        let t = step as f64;
        let d = self.decay.min((1.0 + t) / (10.0 + t));
        let _g = tch::no_grad_guard();
        for (g, a) in &self.pairs {
            let mut a = a.shallow_clone();
            let _ = a.g_mul_scalar_(d);
            let _ = a.g_add_(&(g * (1.0 - d)));
        }
    }
}

/// A conditional GAN with its optimisers.
pub struct Gan {
    cfg: ModelConfig,
    device: Device,
    g_vs: VarStore,
    d_vs: VarStore,
    generator: Generator,
    ema: Option<Ema>,
    discriminator: Discriminator,
    opt_g: nn::Optimizer,
    opt_d: nn::Optimizer,
    rng: SeededRng,
    step: u64,
    prox: Option<Proximal>,
}

impl std::fmt::Debug for Gan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gan").field("cfg", &self.cfg).field("device", &self.device).field("step", &self.step).finish()
    }
}

/// Which network an optimiser step updates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Net {
    G,
    D,
}

fn finite(what: &str, step: u64, loss: &Tensor) -> Result<f64, ModelError> {
    let v = loss.f_double_value(&[]).map_err(ModelError::torch("reading a loss"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(ModelError::NonFinite { what: what.to_string(), step, value: v })
    }
}

fn mean_value(t: &Tensor) -> f64 {
    t.detach().mean(Kind::Float).double_value(&[])
}

impl Gan {
    /// Builds both networks with seeded initial weights and their Adam optimisers.
    pub fn new(cfg: &ModelConfig, device: Device, seed: i64) -> Result<Self, ModelError> {
        cfg.validate()?;
        catch_torch("building the GAN", || {
            tch::manual_seed(seed);
            let g_vs = VarStore::new(device);
            let generator = Generator::new(&g_vs.root(), cfg);
            init_varstore(&g_vs, seed.wrapping_mul(2).wrapping_add(1))?;
            let ema = Ema::new(cfg, device, &g_vs, seed.wrapping_mul(2).wrapping_add(1))?;
            let d_vs = VarStore::new(device);
            let discriminator = Discriminator::new(&d_vs.root(), cfg);
            init_varstore(&d_vs, seed.wrapping_mul(2).wrapping_add(2))?;
            let adam = nn::Adam { beta1: cfg.beta1, beta2: cfg.beta2, wd: 0.0, eps: 1e-8, amsgrad: false };
            let err = ModelError::torch("building the optimisers");
            let opt_g = adam.build(&g_vs, cfg.lr_g).map_err(&err)?;
            let opt_d = adam.build(&d_vs, cfg.lr_d).map_err(&err)?;
            Ok(Gan {
                cfg: cfg.clone(),
                device,
                g_vs,
                d_vs,
                generator,
                ema,
                discriminator,
                opt_g,
                opt_d,
                rng: SeededRng::for_name(seed, "train-step"),
                step: 0,
                prox: None,
            })
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Number of completed training steps.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// Trainable parameter counts (generator, discriminator).
    pub fn param_counts(&self) -> (usize, usize) {
        let count = |vs: &VarStore| vs.trainable_variables().iter().map(|t| t.numel()).sum::<usize>();
        (count(&self.g_vs), count(&self.d_vs))
    }

    /// `n` latent vectors [n, latent_dim] on the model's device, fixed by `seed`.
    pub fn latent(&self, n: i64, seed: i64) -> Tensor {
        SeededRng::for_name(seed, "latent").normal_tensor(&[n.max(0), self.cfg.latent_dim], self.device)
    }

    /// Images for (z, labels) in eval mode (batch-norm running statistics), without gradients; values in [-1, 1].
    /// With an EMA configured, the averaged generator draws them.
    pub fn generate(&self, z: &Tensor, labels: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        let g = self.ema.as_ref().map_or(&self.generator, |e| &e.generator);
        g.forward_t(&z.to_device(self.device), &labels.to_device(self.device), false)
    }

    /// Whether every BatchNorm running statistic of the generator and of its EMA is at its initial value (means 0,
    /// variances 1): a model that never trained, or a federated global whose statistics differential privacy held
    /// back (`federation::strategy::held_back`). False for a generator without BatchNorm.
    pub fn generator_statistics_unset(&self) -> bool {
        let mut seen = false;
        for (vs, _) in self.stores("", None) {
            for (name, t) in vs.variables() {
                let initial = if name.ends_with("running_mean") {
                    0.0
                } else if name.ends_with("running_var") {
                    1.0
                } else {
                    continue;
                };
                seen = true;
                if !tch::no_grad(|| (&t - initial).abs().max().double_value(&[]) == 0.0) {
                    return false;
                }
            }
        }
        seen
    }

    /// Estimates the generator's (and its EMA's) BatchNorm running statistics from its own outputs when they are
    /// unset ([`Gan::generator_statistics_unset`]): [`STANDING_BATCHES`] forward passes in training mode over
    /// seeded latents and every class in turn ("standing statistics", as BigGAN samples). They depend on the
    /// generator's weights alone (its input is noise and labels, never data), so a DP run need not release them
    /// and every sampler derives the same ones. Returns whether it estimated them; call it before sampling
    /// weights that came from elsewhere.
    pub fn settle_generator_statistics(&self) -> Result<bool, ModelError> {
        if !self.generator_statistics_unset() {
            return Ok(false);
        }
        catch_torch("estimating the generator's BatchNorm statistics", || {
            let _g = tch::no_grad_guard();
            let mut rng = SeededRng::for_name(0, "standing-statistics");
            let labels =
                Tensor::arange(STANDING_BATCH, (Kind::Int64, self.device)).remainder(self.cfg.num_classes.max(1));
            for _ in 0..STANDING_BATCHES {
                let z = rng.normal_tensor(&[STANDING_BATCH, self.cfg.latent_dim], self.device);
                let _ = self.generator.forward_t(&z, &labels, true);
                if let Some(e) = &self.ema {
                    let _ = e.generator.forward_t(&z, &labels, true);
                }
            }
            Ok(true)
        })
    }

    /// [`Gan::generate`] from the trained generator itself, also when an EMA exists (for comparing the two).
    pub fn generate_raw(&self, z: &Tensor, labels: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        self.generator.forward_t(&z.to_device(self.device), &labels.to_device(self.device), false)
    }

    /// Fallible [`Gan::generate`]: shape errors and OOM become errors instead of panics.
    pub fn try_generate(&self, z: &Tensor, labels: &Tensor) -> Result<Tensor, ModelError> {
        catch_torch("generate", || Ok(self.generate(z, labels)))
    }

    /// Discriminator outputs (eval mode, no gradients): source scores [B] and, for ACGAN, class logits.
    pub fn discriminate(&self, x: &Tensor, labels: &Tensor) -> Result<(Tensor, Option<Tensor>), ModelError> {
        catch_torch("discriminate", || {
            let _g = tch::no_grad_guard();
            let out = self.discriminator.forward_t(&x.to_device(self.device), &labels.to_device(self.device), false);
            Ok((out.source, out.class_logits))
        })
    }

    /// FedProx: adds μ/2·‖w − w_anchor‖² to both losses (None switches it off). The anchor is the current weights,
    /// and is re-taken by every later [`Gan::load_weights`] while the term is on (the loaded global model is the
    /// anchor FedProx wants).
    pub fn set_proximal(&mut self, mu: Option<f64>) {
        self.prox = mu.filter(|m| m.is_finite() && *m > 0.0).map(|mu| Proximal {
            mu,
            g_anchor: snapshot(&self.g_vs),
            d_anchor: snapshot(&self.d_vs),
        });
    }

    /// The variable stores of both networks with their name prefixes (the EMA under `generator.ema.`).
    fn stores(&self, g_prefix: &'static str, d_prefix: Option<&'static str>) -> Vec<(&VarStore, String)> {
        let mut v = vec![(&self.g_vs, g_prefix.to_string())];
        if let Some(e) = &self.ema {
            v.push((&e.vs, format!("{g_prefix}{EMA_PREFIX}")));
        }
        if let Some(d) = d_prefix {
            v.push((&self.d_vs, d.to_string()));
        }
        v
    }

    /// All variables of both networks (incl. batch-norm running statistics and the generator's EMA), prefixed and
    /// sorted.
    pub fn weights(&self) -> Result<Weights, ModelError> {
        let stores = self.stores(GENERATOR_PREFIX, Some(DISCRIMINATOR_PREFIX));
        stores_to_weights(&stores.iter().map(|(v, p)| (*v, p.as_str())).collect::<Vec<_>>())
    }

    fn load_all(&self, w: &Weights) -> Result<(), ModelError> {
        let stores = self.stores(GENERATOR_PREFIX, Some(DISCRIMINATOR_PREFIX));
        load_stores(&stores.iter().map(|(v, p)| (*v, p.as_str())).collect::<Vec<_>>(), w)
    }

    /// Replaces both networks' variables; the bundle must match exactly (names, shapes, finite values).
    /// Optimiser moments are kept (they adapt within a few steps; resetting them would bias the first steps).
    pub fn load_weights(&mut self, w: &Weights) -> Result<(), ModelError> {
        self.load_all(w)?;
        if let Some(mu) = self.prox.as_ref().map(|p| p.mu) {
            self.set_proximal(Some(mu));
        }
        Ok(())
    }

    /// Replaces both networks' variables *without* moving the FedProx anchor (resuming mid-round: the anchor stays
    /// the round's global weights).
    pub fn restore_weights(&mut self, w: &Weights) -> Result<(), ModelError> {
        self.load_all(w)
    }

    /// Generator variables without prefix (a stand-alone checkpoint, same names as the PyTorch twin in bench/), and
    /// its EMA under `ema.` when there is one.
    pub fn generator_weights(&self) -> Result<Weights, ModelError> {
        let stores = self.stores("", None);
        stores_to_weights(&stores.iter().map(|(v, p)| (*v, p.as_str())).collect::<Vec<_>>())
    }

    /// Discriminator variables without prefix.
    pub fn discriminator_weights(&self) -> Result<Weights, ModelError> {
        stores_to_weights(&[(&self.d_vs, "")])
    }

    /// Loads an unprefixed generator checkpoint (as written by [`Gan::generator_weights`]).
    pub fn load_generator_weights(&mut self, w: &Weights) -> Result<(), ModelError> {
        let stores = self.stores("", None);
        load_stores(&stores.iter().map(|(v, p)| (*v, p.as_str())).collect::<Vec<_>>(), w)
    }

    /// Loads an unprefixed discriminator checkpoint.
    pub fn load_discriminator_weights(&mut self, w: &Weights) -> Result<(), ModelError> {
        load_stores(&[(&self.d_vs, "")], w)
    }

    /// One optimisation step of the configured objective on a real batch ([B,3,H,W] in [-1,1], labels [B] int64).
    /// WGAN-GP runs `n_critic` critic steps on the same batch (fresh noise each) and then one generator step.
    /// A non-finite loss returns [`ModelError::NonFinite`] before the offending update is applied.
    pub fn train_step(&mut self, real: &Tensor, labels: &Tensor) -> Result<StepLosses, ModelError> {
        let (real, labels) = self.check_batch(real, labels)?;
        let r = catch_torch("train_step", || match self.cfg.gan {
            GanKind::Cgan => self.step_cgan(&real, &labels),
            GanKind::WganGp => self.step_wgan_gp(&real, &labels),
            GanKind::Acgan => self.step_acgan(&real, &labels),
        });
        self.step += 1;
        let mut losses = r?;
        losses.prox = self.prox_value();
        Ok(losses)
    }

    fn check_batch(&self, real: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        let s = self.cfg.image_size;
        let size = real.size();
        if size.len() != 4 || size[1] != 3 || size[2] != s || size[3] != s || size[0] < 1 {
            return Err(ModelError::Input(format!("real batch has shape {size:?}, expected [B, 3, {s}, {s}]")));
        }
        if labels.size() != [size[0]] {
            return Err(ModelError::Input(format!("labels have shape {:?}, expected [{}]", labels.size(), size[0])));
        }
        if labels.kind() != Kind::Int64 {
            return Err(ModelError::Input(format!("labels have dtype {:?}, expected Int64", labels.kind())));
        }
        let err = ModelError::torch("moving the batch to the device");
        let labels = labels.f_to_device(self.device).map_err(&err)?;
        let (lo, hi) = (labels.min().int64_value(&[]), labels.max().int64_value(&[]));
        if lo < 0 || hi >= self.cfg.num_classes {
            return Err(ModelError::Input(format!(
                "labels span {lo}..={hi}, expected 0..{} (num_classes)",
                self.cfg.num_classes
            )));
        }
        let real = real.f_to_device(self.device).and_then(|t| t.f_to_kind(Kind::Float)).map_err(&err)?;
        Ok((real, labels))
    }

    fn noise(&mut self, b: i64) -> Tensor {
        self.rng.normal_tensor(&[b, self.cfg.latent_dim], self.device)
    }

    /// zero_grad → backward → (FedProx gradient μ(w − w₀)) → Adam step, for one network.
    fn update(&mut self, net: Net, loss: &Tensor) -> Result<(), ModelError> {
        let err = ModelError::torch("backward");
        let opt = match net {
            Net::G => &mut self.opt_g,
            Net::D => &mut self.opt_d,
        };
        opt.zero_grad();
        loss.f_backward().map_err(&err)?;
        if let Some(p) = &self.prox {
            let anchors = if net == Net::G { &p.g_anchor } else { &p.d_anchor };
            let _g = tch::no_grad_guard();
            for (var, anchor) in anchors {
                let mut g = var.grad();
                if g.defined() {
                    let _ = g.f_add_(&((var - anchor) * p.mu)).map_err(&err)?;
                }
            }
        }
        opt.step();
        Ok(())
    }

    /// The discriminator's view of a batch in training, through the DiffAugment policy (a fresh draw per call).
    fn disc(&mut self, x: &Tensor, labels: &Tensor) -> DiscOutput {
        let x = diff_augment(x, self.cfg.diffaugment, &mut self.rng);
        self.discriminator.forward_t(&x, labels, true)
    }

    /// The discriminator's view of a generated batch for the generator's loss. The discriminator's parameters are
    /// frozen while this graph is built, so the backward pass computes no gradients for them (they would be wasted).
    fn disc_for_generator(&mut self, fake: &Tensor, labels: &Tensor) -> DiscOutput {
        self.d_vs.freeze();
        let out = self.disc(fake, labels);
        self.d_vs.unfreeze();
        out
    }

    /// The source part of the discriminator's loss on (real, fake) scores.
    fn d_source_loss(&self, real: &Tensor, fake: &Tensor) -> Tensor {
        match self.cfg.loss {
            SourceLoss::Bce => bce_with_logits(real, 1.0) + bce_with_logits(fake, 0.0),
            SourceLoss::Hinge => (real.neg() + 1.0).relu().mean(Kind::Float) + (fake + 1.0).relu().mean(Kind::Float),
        }
    }

    /// The source part of the generator's loss on the scores of its batch.
    fn g_source_loss(&self, fake: &Tensor) -> Tensor {
        match self.cfg.loss {
            SourceLoss::Bce => bce_with_logits(fake, 1.0),
            SourceLoss::Hinge => -fake.mean(Kind::Float),
        }
    }

    /// The generator's optimiser step followed by the EMA update.
    fn update_generator(&mut self, loss: &Tensor) -> Result<(), ModelError> {
        self.update(Net::G, loss)?;
        if let Some(e) = &self.ema {
            e.update(self.step);
        }
        Ok(())
    }

    fn prox_value(&self) -> Option<f64> {
        let p = self.prox.as_ref()?;
        let _g = tch::no_grad_guard();
        let sq: f64 = p
            .g_anchor
            .iter()
            .chain(&p.d_anchor)
            .map(|(v, a)| (v - a).square().sum(Kind::Double).double_value(&[]))
            .sum();
        Some(0.5 * p.mu * sq)
    }

    fn step_cgan(&mut self, real: &Tensor, labels: &Tensor) -> Result<StepLosses, ModelError> {
        let b = real.size()[0];
        let z = self.noise(b);
        let fake = self.generator.forward_t(&z, labels, true);
        let d_real = self.disc(real, labels).source;
        let d_fake = self.disc(&fake.detach(), labels).source;
        let d_loss = self.d_source_loss(&d_real, &d_fake);
        let d_loss_v = finite("discriminator loss", self.step, &d_loss)?;
        self.update(Net::D, &d_loss)?;
        // Non-saturating (BCE) or hinge generator loss on the just-updated discriminator.
        let g_out = self.disc_for_generator(&fake, labels).source;
        let g_loss = self.g_source_loss(&g_out);
        let g_loss_v = finite("generator loss", self.step, &g_loss)?;
        self.update_generator(&g_loss)?;
        Ok(StepLosses {
            d_loss: d_loss_v,
            g_loss: g_loss_v,
            d_real: mean_value(&d_real),
            d_fake: mean_value(&d_fake),
            gp: None,
            aux_acc: None,
            prox: None,
        })
    }

    fn step_wgan_gp(&mut self, real: &Tensor, labels: &Tensor) -> Result<StepLosses, ModelError> {
        let b = real.size()[0];
        // (critic loss, penalty at λ if this step took one, mean real score, mean fake score) of the last critic step.
        let mut last = (0.0, None, 0.0, 0.0);
        let every = self.cfg.gp_every.max(1);
        for i in 0..self.cfg.n_critic {
            let z = self.noise(b);
            let fake = {
                let _g = tch::no_grad_guard();
                self.generator.forward_t(&z, labels, true)
            };
            // Lazy penalty: on every `gp_every`-th critic step of the run (counted from the step, so a resumed run
            // keeps the schedule), weighted by `gp_every`.
            let penalised = (self.step as i64 * self.cfg.n_critic + i) % every == 0;
            let alpha = penalised.then(|| self.rng.uniform_tensor(&[b], 0.0, 1.0, self.device));
            // DiffAugment: the critic sees augmented real and fake batches; the penalty is taken between those.
            let policy = self.cfg.diffaugment;
            let real_a = diff_augment(real, policy, &mut self.rng);
            let fake_a = diff_augment(&fake, policy, &mut self.rng);
            let d_real = self.discriminator.forward_t(&real_a, labels, true).source;
            let d_fake = self.discriminator.forward_t(&fake_a, labels, true).source;
            let mut d_loss = d_fake.mean(Kind::Float) - d_real.mean(Kind::Float);
            if let Some(alpha) = alpha {
                let disc = &self.discriminator;
                let gp = gradient_penalty(
                    |x| disc.forward_t(x, labels, true).source,
                    &real_a,
                    &fake_a,
                    &alpha,
                    self.cfg.gp_lambda * every as f64,
                )?;
                d_loss += &gp;
                last.1 = Some(gp.double_value(&[]) / every as f64);
            }
            let d_loss_v = finite("critic loss", self.step, &d_loss)?;
            self.update(Net::D, &d_loss)?;
            (last.0, last.2, last.3) = (d_loss_v, mean_value(&d_real), mean_value(&d_fake));
        }
        let z = self.noise(b);
        let fake = self.generator.forward_t(&z, labels, true);
        let g_loss = -self.disc_for_generator(&fake, labels).source.mean(Kind::Float);
        let g_loss_v = finite("generator loss", self.step, &g_loss)?;
        self.update_generator(&g_loss)?;
        Ok(StepLosses {
            d_loss: last.0,
            g_loss: g_loss_v,
            d_real: last.2,
            d_fake: last.3,
            gp: last.1,
            aux_acc: None,
            prox: None,
        })
    }

    fn step_acgan(&mut self, real: &Tensor, labels: &Tensor) -> Result<StepLosses, ModelError> {
        let b = real.size()[0];
        let z = self.noise(b);
        let fake = self.generator.forward_t(&z, labels, true);
        let missing = || ModelError::Torch { context: "ACGAN step".into(), message: "no class logits".into() };
        let out_r = self.disc(real, labels);
        let out_f = self.disc(&fake.detach(), labels);
        let (cls_r, cls_f) = (out_r.class_logits.ok_or_else(missing)?, out_f.class_logits.ok_or_else(missing)?);
        let class_loss = if self.cfg.acgan_fake_class {
            cross_entropy(&cls_r, labels) + cross_entropy(&cls_f, labels)
        } else {
            cross_entropy(&cls_r, labels)
        };
        let d_loss = self.d_source_loss(&out_r.source, &out_f.source) + class_loss;
        let d_loss_v = finite("discriminator loss", self.step, &d_loss)?;
        self.update(Net::D, &d_loss)?;
        let aux_acc = cls_r.detach().accuracy_for_logits(labels).double_value(&[]);
        let out_g = self.disc_for_generator(&fake, labels);
        let cls_g = out_g.class_logits.ok_or_else(missing)?;
        let g_loss = self.g_source_loss(&out_g.source) + cross_entropy(&cls_g, labels) * self.cfg.acgan_class_weight;
        let g_loss_v = finite("generator loss", self.step, &g_loss)?;
        self.update_generator(&g_loss)?;
        Ok(StepLosses {
            d_loss: d_loss_v,
            g_loss: g_loss_v,
            d_real: mean_value(&out_r.source),
            d_fake: mean_value(&out_f.source),
            gp: None,
            aux_acc: Some(aux_acc),
            prox: None,
        })
    }
}
