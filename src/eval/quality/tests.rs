//! Tests of the quality metrics on constructed distributions whose answer is known.

use tch::{Device, Kind, Tensor};

use super::*;
use crate::models::rng::SeededRng;
use crate::models::simple_features;

const D: i64 = 4;

/// `n` samples of N(shift, scale² I) in D dims.
fn gaussian(n: i64, seed: i64, shift: &[f32], scale: f64) -> Tensor {
    SeededRng::new(seed).normal_tensor(&[n, D], Device::Cpu) * scale + Tensor::from_slice(shift).view([1, D])
}

/// Three well-separated classes (means 6·e_k), `per` samples each, labels 0,0,..,1,1,..,2,2.
fn labelled(per: i64, seed: i64) -> (Tensor, Vec<i64>) {
    let parts: Vec<Tensor> = (0..3)
        .map(|c| {
            let mut m = [0f32; D as usize];
            m[c as usize] = 6.0;
            gaussian(per, seed * 10 + c, &m, 1.0)
        })
        .collect();
    let labels = (0..3).flat_map(|c| std::iter::repeat_n(c, per as usize)).collect();
    (Tensor::cat(&parts, 0), labels)
}

fn names(k: usize) -> Vec<String> {
    (0..k).map(|c| format!("tissue-{c}")).collect()
}

#[test]
fn frechet_is_zero_on_itself_and_grows_with_a_known_shift_per_class() {
    tch::set_num_threads(1);
    let (real, labels) = labelled(60, 1);
    let rep = frechet_report(&real, &labels, &real, &labels, &names(3)).unwrap();
    assert!(rep.overall.abs() < 1e-6, "overall {}", rep.overall);
    for c in &rep.per_class {
        assert!(c.frechet_distance.unwrap().abs() < 1e-6, "{c:?}");
        assert_eq!((c.real_count, c.synthetic_count), (60, 60));
    }
    // Shift class 1 only, by s along one axis: its covariance is unchanged, so its FD is exactly s².
    let mut last = 0.0;
    for s in [0.5f64, 1.0, 2.0] {
        let mask = Tensor::from_slice(&labels.iter().map(|&l| f32::from(u8::from(l == 1))).collect::<Vec<_>>());
        let shift = mask.view([-1, 1]) * Tensor::from_slice(&[0f32, 0.0, 0.0, s as f32]).view([1, D]);
        let rep = frechet_report(&real, &labels, &(&real + shift), &labels, &names(3)).unwrap();
        let fd1 = rep.per_class[1].frechet_distance.unwrap();
        assert!((fd1 - s * s).abs() < 1e-4, "class 1 FD {fd1} vs {}", s * s);
        assert!(rep.per_class[0].frechet_distance.unwrap() < 1e-6 && rep.per_class[2].frechet_distance.unwrap() < 1e-6);
        assert!(rep.overall > 0.0 && fd1 > last);
        assert_eq!(rep.worst_class, Some(1));
        last = fd1;
    }
    // A class with a single synthetic sample is skipped with a reason, not an error.
    let few: Vec<i64> = labels.iter().enumerate().map(|(i, &l)| if l == 2 && i != 179 { 0 } else { l }).collect();
    let rep = frechet_report(&real, &labels, &real, &few, &names(3)).unwrap();
    assert_eq!(rep.per_class[2].frechet_distance, None);
    assert!(rep.per_class[2].skipped.as_deref().unwrap().contains("1 synthetic"), "{:?}", rep.per_class[2]);
}

#[test]
fn precision_recall_on_constructed_distributions() {
    tch::set_num_threads(1);
    let real = gaussian(400, 1, &[0.0; 4], 1.0);
    // Same distribution: both high.
    let same = precision_recall(&real, &gaussian(400, 2, &[0.0; 4], 1.0), 3, 64).unwrap();
    assert!(same.precision > 0.8 && same.recall > 0.8, "{same:?}");
    // Synthetic concentrated in a small central region of the real data: precise, but covers little of it.
    let narrow = precision_recall(&real, &gaussian(400, 3, &[0.0; 4], 0.15), 3, 64).unwrap();
    assert!(narrow.precision > 0.95, "{narrow:?}");
    assert!(narrow.recall < 0.2, "{narrow:?}");
    // Disjoint: neither is inside the other.
    let far = precision_recall(&real, &gaussian(400, 4, &[20.0, 0.0, 0.0, 0.0], 1.0), 3, 64).unwrap();
    assert_eq!((far.precision, far.recall), (0.0, 0.0), "{far:?}");
    // Chunking does not change the answer.
    let unchunked = precision_recall(&real, &gaussian(400, 3, &[0.0; 4], 0.15), 3, 10_000).unwrap();
    assert_eq!(unchunked, narrow);
    assert!(matches!(precision_recall(&real, &real.narrow(0, 0, 3), 3, 64), Err(QualityError::TooFewSamples { .. })));
}

/// Random images [n, 3, 8, 8] in [-1, 1].
fn images(n: i64, seed: i64) -> Tensor {
    SeededRng::new(seed).uniform_tensor(&[n, 3, 8, 8], -1.0, 1.0, Device::Cpu)
}

/// 20 fresh synthetic images with exact copies of training images 5, 17 and 31 planted at positions 3, 11 and 20.
fn planted(train: &Tensor) -> (Tensor, Vec<(usize, usize)>) {
    let plants = vec![(3usize, 5usize), (11, 17), (20, 31)];
    let fresh = images(20, 99);
    let mut rows: Vec<Tensor> = (0..20).map(|i| fresh.get(i)).collect();
    for &(pos, src) in &plants {
        rows.insert(pos, train.get(src as i64));
    }
    (Tensor::stack(&rows, 0), plants)
}

#[test]
fn memorization_flags_planted_training_copies_and_not_fresh_samples() {
    tch::set_num_threads(1);
    let train = images(40, 1);
    let test = images(20, 2);
    let (synth, plants) = planted(&train);
    let (ftrain, ftest, fsynth) = (simple_features(&train), simple_features(&test), simple_features(&synth));
    let opts = QualityOptions { top_n: 3, chunk_size: 7, ..Default::default() };
    let features = SpaceSets { synthetic: &fsynth, train: &ftrain, test: Some(&ftest) };
    let pixels = SpaceSets { synthetic: &synth, train: &train, test: Some(&test) };
    let expected: Vec<usize> = plants.iter().map(|p| p.0).collect();
    for sets in [&features, &pixels] {
        let scan = scan_space(sets, opts.chunk_size).unwrap().unwrap();
        assert_eq!(scan.suspicious(0.5), expected);
        for &(pos, src) in &plants {
            assert_eq!(scan.nearest[pos], src);
            assert!(scan.ratios[pos] < 1e-3, "copy ratio {}", scan.ratios[pos]);
        }
        let fresh_min = (0..23).filter(|i| !expected.contains(i)).map(|i| scan.ratios[i]).fold(f64::MAX, f64::min);
        assert!(fresh_min > 0.5, "a fresh sample looks like a copy: ratio {fresh_min}");
    }
    let rep = memorization(&features, Some(&pixels), &opts).unwrap();
    for space in [rep.feature.as_ref().unwrap(), rep.pixel.as_ref().unwrap()] {
        assert_eq!(space.suspicious_count, 3);
        assert!((space.suspicious_share - 3.0 / 23.0).abs() < 1e-12);
        assert!(space.median_ratio > 0.5, "{space:?}");
        let mut top: Vec<(usize, usize)> = space.closest.iter().map(|p| (p.synthetic, p.train)).collect();
        top.sort_unstable();
        assert_eq!(top, plants);
    }
    // Fresh samples only: nothing flagged. Without test pixels the pixel space has no baseline and says why.
    let fresh = images(20, 99);
    let ffresh = simple_features(&fresh);
    let clean = SpaceSets { synthetic: &ffresh, train: &ftrain, test: Some(&ftest) };
    let no_base = SpaceSets { synthetic: &fresh, train: &train, test: None };
    let rep = memorization(&clean, Some(&no_base), &opts).unwrap();
    assert_eq!(rep.feature.unwrap().suspicious_count, 0);
    assert!(rep.pixel.is_none() && rep.pixel_skipped.unwrap().contains("test"));

    // The picture: one row per pair, [synthetic | training], at the grid's tile size.
    let pairs = &memorization(&features, Some(&pixels), &opts).unwrap().pixel.unwrap().closest;
    let dir = tempfile::tempdir().unwrap();
    let path = closest_pairs_png(&synth, &train, pairs, &dir.path().join("pairs.png")).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    let pad = crate::data::grid::GRID_PAD;
    assert_eq!(img.dimensions(), (2 * (8 + pad) + pad, 3 * (8 + pad) + pad));
    // Each row holds a copy, so its two tiles are identical.
    for r in 0..3 {
        let y = pad + r * (8 + pad);
        for (dy, dx) in [(0, 0), (3, 5), (7, 7)] {
            assert_eq!(img.get_pixel(pad + dx, y + dy), img.get_pixel(2 * pad + 8 + dx, y + dy));
        }
    }
    let bad = ClosePair { synthetic: 99, train: 0, distance: 0.0, ratio: 0.0 };
    assert!(closest_pairs_png(&synth, &train, &[bad], &dir.path().join("x.png")).is_err());
}

/// Logits that make the reference classifier predict `pred[i]` for sample i.
fn logits_for(pred: &[i64], k: i64) -> Tensor {
    Tensor::from_slice(pred).one_hot(k).to_kind(Kind::Float) * 5.0
}

#[test]
fn coverage_detects_a_one_class_generator_and_diversity_a_collapsed_class() {
    tch::set_num_threads(1);
    let k = 4;
    let cond: Vec<i64> = (0..80).map(|i| i % k).collect();
    let healthy = class_coverage(&predicted_classes(&logits_for(&cond, k)).unwrap(), &cond, k as usize, 0.5);
    assert_eq!(healthy.covered_share, 1.0);
    assert_eq!(healthy.agreement, 1.0);
    assert_eq!(healthy.predicted_histogram, vec![20; 4]);
    let one = class_coverage(&predicted_classes(&logits_for(&[2; 80], k)).unwrap(), &cond, k as usize, 0.5);
    assert_eq!(one.covered, vec![Some(false), Some(false), Some(true), Some(false)]);
    assert_eq!(one.covered_share, 0.25);
    assert_eq!(one.agreement, 0.25);
    assert_eq!(one.per_class_agreement, vec![Some(0.0), Some(0.0), Some(1.0), Some(0.0)]);
    assert_eq!(one.predicted_histogram, vec![0, 0, 80, 0]);
    let cm = confusion_matrix(&cond, &[2; 80], k as usize);
    assert!(cm.counts.iter().all(|row| row == &vec![0, 0, 20, 0]));

    // Diversity: class 1 of the synthetic set is one point plus tiny noise.
    let (real, labels) = labelled(50, 1);
    let (fresh, _) = labelled(50, 2);
    let point = Tensor::from_slice(&[0f32, 6.0, 0.0, 0.0]).view([1, D]);
    let collapsed = point + SeededRng::new(7).normal_tensor(&[50, D], Device::Cpu) * 1e-3;
    let synth = Tensor::cat(&[fresh.narrow(0, 0, 50), collapsed, fresh.narrow(0, 100, 50)], 0);
    let opts = QualityOptions { max_diversity_samples: 40, chunk_size: 16, ..Default::default() };
    let rep = class_diversity(&real, &labels, &synth, &labels, None, &names(3), &opts).unwrap();
    assert_eq!(rep.collapsed_classes, vec![1]);
    assert!(rep.per_class[1].ratio.unwrap() < 0.01, "{:?}", rep.per_class[1]);
    for c in [0, 2] {
        let r = rep.per_class[c].ratio.unwrap();
        assert!((0.8..1.25).contains(&r), "class {c} ratio {r}");
    }
}

/// The blind spot the layout view closes: features that spread like the real ones (ratio ≈ 1 in every class), while
/// class 1's images repeat one arrangement under colour and contrast changes and class 2's are flat squares of
/// different colours. Only the layout view sees both; independent layouts (class 0) read ≈ 1 in it too.
#[test]
fn layout_view_flags_a_repeated_arrangement_and_flat_squares_that_features_call_diverse() {
    tch::set_num_threads(1);
    let per = 40;
    let (real, labels) = labelled(per, 1);
    let (synth, _) = labelled(per, 2);
    let real_pixels = images(3 * per, 11);
    let mut rng = SeededRng::new(12);
    let base = images(1, 13);
    let gain = rng.uniform_tensor(&[per, 1, 1, 1], 0.3, 1.0, Device::Cpu);
    let colour = rng.uniform_tensor(&[per, 3, 1, 1], -0.5, 0.5, Device::Cpu);
    let repeated = (&base * &gain + &colour + rng.normal_tensor(&[per, 3, 8, 8], Device::Cpu) * 0.02).clamp(-1.0, 1.0);
    let flat = rng.uniform_tensor(&[per, 3, 1, 1], -1.0, 1.0, Device::Cpu).expand([per, 3, 8, 8], false)
        + rng.normal_tensor(&[per, 3, 8, 8], Device::Cpu) * 1e-3;
    let synth_pixels = Tensor::cat(&[images(per, 14), repeated, flat], 0);
    let opts = QualityOptions { max_diversity_samples: 40, chunk_size: 16, ..Default::default() };
    let pixels = LayoutPixels { real: &real_pixels, synthetic: &synth_pixels };
    let rep = class_diversity(&real, &labels, &synth, &labels, Some(pixels), &names(3), &opts).unwrap();
    for c in &rep.per_class {
        let r = c.ratio.unwrap();
        assert!((0.8..1.25).contains(&r), "feature ratio of class {} is {r}: the features must not see it", c.class);
        let d = c.real_layout_distance.unwrap();
        assert!((d - 2f64.sqrt()).abs() < 0.05, "independent real layouts sit ≈ √2 apart, got {d}");
    }
    let layout: Vec<f64> = rep.per_class.iter().map(|c| c.layout_ratio.unwrap()).collect();
    assert!((0.9..1.1).contains(&layout[0]), "independent layouts: {layout:?}");
    assert!(layout[1] < 0.2, "one repeated arrangement: {layout:?}");
    assert!(layout[2] < 0.2, "flat squares are not diverse layouts: {layout:?}");
    assert_eq!(rep.collapsed_classes, vec![1, 2]);
    let mean = rep.mean_layout_ratio.unwrap();
    assert!((mean - layout.iter().sum::<f64>() / 3.0).abs() < 1e-12);

    // Without pixels the layout view is absent rather than zero, and the old reports (no layout fields) still load.
    let without = class_diversity(&real, &labels, &synth, &labels, None, &names(3), &opts).unwrap();
    assert!(without.collapsed_classes.is_empty() && without.mean_layout_ratio.is_none());
    assert!(without.per_class.iter().all(|c| c.layout_ratio.is_none() && c.real_layout_distance.is_none()));
    let mut old = serde_json::to_value(&without).unwrap();
    old.as_object_mut().unwrap().remove("mean_layout_ratio");
    for c in old["per_class"].as_array_mut().unwrap() {
        for key in ["real_layout_distance", "synthetic_layout_distance", "layout_ratio"] {
            c.as_object_mut().unwrap().remove(key);
        }
    }
    assert_eq!(serde_json::from_value::<DiversityReport>(old).unwrap(), without);
}

/// The layout view's blind spot and the texture view that closes it: one motif at shifted places. Real images of
/// the class are textures of varying contrast and grain; the synthetic ones are a single such texture rolled by a
/// random offset. Their pixels are nearly uncorrelated (the layout view reads ≈ 1), while their Fourier amplitudes
/// are equal (the texture ratio ≈ 0); fresh textures read ≈ 1 in both.
#[test]
fn texture_view_sees_one_motif_at_shifted_places_where_the_layout_view_does_not() {
    tch::set_num_threads(1);
    let per = 24;
    let texture = |seed: i64| {
        let mut rng = SeededRng::new(seed);
        let noise = rng.uniform_tensor(&[per, 3, 32, 32], -1.0, 1.0, Device::Cpu);
        let blurred = noise.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>);
        let grain = rng.uniform_tensor(&[per, 1, 1, 1], 0.0, 1.0, Device::Cpu);
        let contrast = rng.uniform_tensor(&[per, 1, 1, 1], 0.3, 1.0, Device::Cpu);
        let mixed: Tensor = &noise * &grain + blurred * (1.0 - &grain);
        (mixed * contrast * 1.5).clamp(-1.0, 1.0)
    };
    let (real, fresh, motif) = (texture(21), texture(22), texture(23).get(0));
    let mut rng = SeededRng::new(24);
    let rolled: Vec<Tensor> = (0..per)
        .map(|_| {
            let shift = rng.uniform_vec(2, 4.0, 28.0);
            motif.roll([shift[0] as i64, shift[1] as i64].as_slice(), [1i64, 2].as_slice())
        })
        .collect();
    let synth_pixels = Tensor::cat(&[fresh, Tensor::stack(&rolled, 0)], 0);
    let real_pixels = Tensor::cat(&[&real, &real], 0);
    let labels = [vec![0i64; per as usize], vec![1; per as usize]].concat();
    // Features that see nothing wrong (as the reference's did on the demos), so the flag is the pixel views' alone.
    let (real_f, synth_f) = (gaussian(2 * per, 31, &[0.0; 4], 1.0), gaussian(2 * per, 32, &[0.0; 4], 1.0));
    let opts = QualityOptions { max_diversity_samples: 40, chunk_size: 16, ..Default::default() };
    let pixels = LayoutPixels { real: &real_pixels, synthetic: &synth_pixels };
    let rep = class_diversity(&real_f, &labels, &synth_f, &labels, Some(pixels), &names(2), &opts).unwrap();
    let (fresh_r, rolled_r) = (&rep.per_class[0], &rep.per_class[1]);
    assert!(rolled_r.layout_ratio.unwrap() > 0.8, "shifted copies are not one arrangement: {rolled_r:?}");
    assert!(rolled_r.texture_ratio.unwrap() < 0.05, "the texture view sees one motif: {rolled_r:?}");
    for view in [fresh_r.layout_ratio, fresh_r.texture_ratio] {
        assert!((0.8..1.25).contains(&view.unwrap()), "fresh textures: {fresh_r:?}");
    }
    assert!(rep.collapsed_classes.is_empty(), "the texture view is reported, not part of the flag: {rep:?}");
}

#[test]
fn inter_class_frechet_diagonal_and_swapped_classes() {
    tch::set_num_threads(1);
    let (real, labels) = labelled(40, 1);
    let (synth, syn_labels) = labelled(40, 2);
    let m = inter_class_frechet(&real, &labels, &synth, &syn_labels, 3).unwrap();
    assert_eq!(m.diagonal_smallest_share, Some(1.0));
    assert!(m.matrix[0][0].unwrap() < m.matrix[1][0].unwrap());
    // A generator that draws class 1 when asked for 0 and vice versa: columns 0 and 1 have their minimum off the
    // diagonal; class 2 stays right.
    let swapped: Vec<i64> = syn_labels.iter().map(|&l| [1, 0, 2][l as usize]).collect();
    let m = inter_class_frechet(&real, &labels, &synth, &swapped, 3).unwrap();
    assert_eq!(m.diagonal_smallest, vec![Some(false), Some(false), Some(true)]);
    assert!((m.diagonal_smallest_share.unwrap() - 1.0 / 3.0).abs() < 1e-12);
}

#[test]
fn heatmaps_are_decodable_pngs_of_the_expected_size() {
    let dir = tempfile::tempdir().unwrap();
    let m = vec![vec![0.5, 12.0, f64::NAN], vec![3.0, 0.1, 7.5], vec![40.0, 2.0, 0.0]];
    let path = heatmap_png(&m, &names(3), "test heatmap", &dir.path().join("h.png")).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (HEATMAP_WIDTH, HEATMAP_HEIGHT));
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(colours.len() > 20, "only {} colours", colours.len());
    // Many classes with long names and a constant matrix still draw.
    let many: Vec<String> = (0..20).map(|i| format!("a rather long tissue class name {i}")).collect();
    let flat = vec![vec![1.0; 20]; 20];
    let png = heatmap_png_bytes(&flat, &many, "flat").unwrap();
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!((img.width(), img.height()), (HEATMAP_WIDTH, HEATMAP_HEIGHT));
    let err = heatmap_png_bytes(&m, &names(2), "bad").unwrap_err();
    assert!(err.to_string().contains("2×2"), "{err}");
}

/// A small end-to-end input: 3 classes, features from the fixed feature map of 8×8 images.
fn small_inputs() -> QualityInputs {
    let k = 3;
    let class_images = |n: i64, seed: i64| -> (Tensor, Vec<i64>) {
        let labels: Vec<i64> = (0..n).map(|i| i % k).collect();
        // Class c is brightened by c/2 so the classes differ in feature space.
        let shift = Tensor::from_slice(&labels).to_kind(Kind::Float).view([-1, 1, 1, 1]) * 0.5 - 0.5;
        ((images(n, seed) * 0.5 + shift).clamp(-1.0, 1.0), labels)
    };
    let (train, train_labels) = class_images(30, 1);
    let (test, test_labels) = class_images(18, 2);
    let (mut synth, synthetic_labels) = class_images(18, 3);
    // Plant one training copy (train 4 has label 1, like synthetic 7).
    synth = Tensor::cat(&[synth.narrow(0, 0, 7), train.narrow(0, 4, 1), synth.narrow(0, 8, 10)], 0);
    QualityInputs {
        train_features: simple_features(&train),
        train_labels,
        test_features: simple_features(&test),
        test_labels,
        synthetic_features: simple_features(&synth),
        synthetic_logits: logits_for(&synthetic_labels, k),
        synthetic_labels,
        train_pixels: Some(train),
        test_pixels: Some(test),
        synthetic_pixels: Some(synth),
        num_classes: k as usize,
        class_names: names(3),
    }
}

#[test]
fn assess_end_to_end_report_roundtrips_and_pictures_are_written() {
    tch::set_num_threads(1);
    let inputs = small_inputs();
    let opts = QualityOptions { top_n: 4, chunk_size: 8, ..Default::default() };
    let rep = assess(&inputs, &opts).unwrap();
    assert_eq!((rep.counts.train, rep.counts.test, rep.counts.synthetic), (30, 18, 18));
    assert_eq!(rep.coverage.agreement, 1.0);
    assert_eq!(rep.confusion.counts, vec![vec![6, 0, 0], vec![0, 6, 0], vec![0, 0, 6]]);
    let pixel = rep.memorization.pixel.as_ref().unwrap();
    assert_eq!((pixel.closest[0].synthetic, pixel.closest[0].train), (7, 4));
    assert!(pixel.suspicious_count >= 1);
    assert_eq!(rep.inter_class_fd.as_ref().unwrap().matrix.len(), 3);
    // assess() hands the real split's and the synthetic pixels to the layout view.
    assert!(rep.diversity.per_class.iter().all(|c| c.layout_ratio.is_some()), "{:?}", rep.diversity);
    assert!(rep.edges.as_ref().is_some_and(|e| e.per_class.len() == 3 && e.max_excess.is_some()), "{:?}", rep.edges);
    let json = serde_json::to_string(&rep).unwrap();
    let back: QualityReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, rep);

    let dir = tempfile::tempdir().unwrap();
    let files = write_pictures(&inputs, &rep, dir.path()).unwrap();
    assert_eq!(files, vec![CLOSEST_PAIRS_PNG, FD_HEATMAP_PNG, CONFUSION_HEATMAP_PNG]);
    let pairs = image::open(dir.path().join(CLOSEST_PAIRS_PNG)).unwrap();
    assert_eq!((pairs.width(), pairs.height()), (2 * 10 + 2, 4 * 10 + 2));
    for f in &files[1..] {
        let img = image::open(dir.path().join(f)).unwrap();
        assert_eq!((img.width(), img.height()), (HEATMAP_WIDTH, HEATMAP_HEIGHT));
    }
}

#[test]
fn bad_inputs_and_options_are_named() {
    tch::set_num_threads(1);
    let opts = QualityOptions::default();
    let err = |f: &dyn Fn(&mut QualityInputs)| {
        let mut i = small_inputs();
        f(&mut i);
        assess(&i, &opts).unwrap_err().to_string()
    };
    let e = err(&|i| i.test_features = i.test_features.narrow(1, 0, 5));
    assert!(e.contains("test_features") && e.contains("dimension 5"), "{e}");
    let e = err(&|i| i.synthetic_labels[4] = 3);
    assert!(e.contains("synthetic_labels") && e.contains("index 4"), "{e}");
    let e = err(&|i| i.synthetic_logits = i.synthetic_logits.narrow(1, 0, 2));
    assert!(e.contains("synthetic_logits"), "{e}");
    let e = err(&|i| i.train_labels.pop().map(|_| ()).unwrap_or_default());
    assert!(e.contains("train_labels") && e.contains("29 labels for 30"), "{e}");
    let e = err(&|i| i.test_pixels = Some(images(3, 1)));
    assert!(e.contains("test_pixels"), "{e}");
    let e = err(&|i| i.train_features = i.train_features.fill_diagonal_(f64::NAN, false));
    assert!(e.contains("train_features") && e.contains("NaN"), "{e}");
    let e = err(&|i| i.class_names.pop().map(|_| ()).unwrap_or_default());
    assert!(e.contains("class_names"), "{e}");
    let bad = QualityOptions { k: 0, ..Default::default() };
    assert!(assess(&small_inputs(), &bad).unwrap_err().to_string().contains("`k`"));
    // Options deserialize with defaults for missing keys.
    let o: QualityOptions = serde_json::from_str(r#"{"k": 5}"#).unwrap();
    assert_eq!(o, QualityOptions { k: 5, ..Default::default() });
}
