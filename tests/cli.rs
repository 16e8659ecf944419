//! The real `histofed` binary on the paths a user takes first: pointing it at a real dataset (`--data npz:…`,
//! `--data imagefolder:…`, `--data pcam:…`), and reading its log once stderr is a file or a pipe.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use histofed::data::synth::{self, SynthConfig};

fn histofed(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_histofed"));
    cmd.args(args).env("OMP_WAIT_POLICY", "PASSIVE").env_remove("NO_COLOR").env_remove("RUST_LOG");
    cmd.stdin(Stdio::null());
    cmd
}

fn run(args: &[&str]) -> Output {
    histofed(args).output().expect("histofed runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `.npy` v1 array.
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A file in PathMNIST's layout: 28×28 RGB `uint8` images, `(N, 1)` `uint8` labels 0..9, train/val/test.
fn write_pathmnist(path: &Path, per_class: &[(&str, usize)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (i, (split, n)) in per_class.iter().enumerate() {
        let ds = synth::generate(&SynthConfig {
            num_classes: 9,
            per_class: *n,
            size: 28,
            seed: i as u64,
            ..Default::default()
        })
        .unwrap();
        let labels: Vec<u8> = ds.labels.iter().map(|&l| l as u8).collect();
        zip.start_file(format!("{split}_images.npy"), opts).unwrap();
        zip.write_all(&npy("|u1", &[ds.len(), 28, 28, 3], &ds.images)).unwrap();
        zip.start_file(format!("{split}_labels.npy"), opts).unwrap();
        zip.write_all(&npy("|u1", &[ds.len(), 1], &labels)).unwrap();
    }
    zip.finish().unwrap();
}

/// `histofed partition --data npz:pathmnist.npz` used to stop with "the data has 9 classes but the model is
/// configured for 4 (data.num_classes)". A real source brings its classes; only a count the user set explicitly
/// can conflict with it, and then the error says so.
#[test]
fn real_data_brings_its_own_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let npz = tmp.path().join("pathmnist.npz");
    write_pathmnist(&npz, &[("train", 8), ("val", 2), ("test", 2)]);
    let png = tmp.path().join("partition.png");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
    let data = format!("npz:{}", npz.display());
    let (demo, png) = (demo.to_str().unwrap(), png.to_str().unwrap());
    let base = ["partition", "--config", demo, "--data", &data, "--set", "data.partition=\"iid\"", "--png", png];

    // The sample configuration with a PathMNIST-layout file: 9 classes, as the data says.
    let out = run(&base);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let header = stdout.lines().find(|l| l.trim_start().starts_with("site")).expect("a histogram table");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["site", "ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM", "total"],
        "{stdout}"
    );
    assert!(stderr.contains("the model takes its classes from the data"), "{stderr}");

    // An explicit, conflicting count is refused with a message naming the key, the data and the way out.
    let mut explicit = base.to_vec();
    explicit.extend(["--set", "data.num_classes=4"]);
    let out = run(&explicit);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("data.num_classes = 4 is set"), "{stderr}");
    assert!(stderr.contains(&format!("{data} has 9 classes (ADI, BACK, DEB")), "{stderr}");
    assert!(stderr.contains("remove data.num_classes"), "{stderr}");
    // …and an explicit count that matches is fine.
    let mut matching = base.to_vec();
    matching.extend(["--set", "data.num_classes=9"]);
    assert!(run(&matching).status.success());

    // An ImageFolder of 2 classes, with the built-in defaults.
    let folder = tmp.path().join("folder");
    let two = synth::generate(&SynthConfig { num_classes: 2, per_class: 12, size: 32, seed: 5, ..Default::default() })
        .unwrap();
    histofed::data::write_imagefolder(&two, &folder).unwrap();
    let data = format!("imagefolder:{}", folder.display());
    let out = run(&["partition", "--data", &data, "--set", "data.partition=\"iid\"", "--png", png]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let header = stdout.lines().find(|l| l.trim_start().starts_with("site")).expect("a histogram table");
    assert_eq!(header.split_whitespace().collect::<Vec<_>>(), ["site", "ADI", "BACK", "total"], "{stdout}");
}

#[cfg(feature = "pcam")]
/// One split of PatchCamelyon as it ships (gunzipped): `camelyonpatch_level_2_split_{split}_x.h5` with dataset `x`
/// of `(N, 96, 96, 3)` uint8 patches, `…_y.h5` with dataset `y` of `(N, 1, 1, 1)` uint8 labels 0/1.
fn write_pcam_split(dir: &Path, split: &str, n: usize) {
    let ds = synth::generate(&SynthConfig {
        num_classes: 2,
        per_class: n.div_ceil(2),
        size: 96,
        seed: 3,
        ..Default::default()
    })
    .unwrap();
    let labels: Vec<u8> = ds.labels[..n].iter().map(|&l| l as u8).collect();
    for (xy, shape, data) in
        [("x", [n, 96, 96, 3], &ds.images[..n * 96 * 96 * 3]), ("y", [n, 1, 1, 1], labels.as_slice())]
    {
        let file = hdf5::File::create(dir.join(format!("camelyonpatch_level_2_split_{split}_{xy}.h5"))).unwrap();
        file.new_dataset::<u8>().shape(shape).create(xy).unwrap().write_raw(data).unwrap();
    }
}

#[cfg(feature = "pcam")]
/// `--data pcam:DIR`: PatchCamelyon's HDF5 files through the binary — its own train split, its two classes, the
/// `data.max_images` cap — and a folder with a split file missing, or a truncated one, is an error naming the file.
#[test]
fn pcam_folder_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pcam");
    std::fs::create_dir(&dir).unwrap();
    for (split, n) in [("train", 30), ("valid", 6), ("test", 8)] {
        write_pcam_split(&dir, split, n);
    }
    let png = tmp.path().join("partition.png");
    let data = format!("pcam:{}", dir.display());
    let base = ["partition", "--data", &data, "--set", "data.partition=\"iid\"", "--png", png.to_str().unwrap()];
    let table = |out: &Output| -> (Vec<String>, Vec<String>) {
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
        let row = |first: &str| -> Vec<String> {
            let line = stdout.lines().find(|l| l.trim_start().starts_with(first)).expect("a histogram table");
            line.split_whitespace().map(String::from).collect()
        };
        (row("site"), row("total"))
    };

    // PCam's train split, whole (the valid and test files are the model's val and test splits, not carved from it).
    let (header, total) = table(&run(&base));
    assert_eq!(header, ["site", "normal", "tumor", "total"]);
    assert_eq!(total, ["total", "15", "15", "30"]);
    // The first 10 rows of each split only.
    let mut capped = base.to_vec();
    capped.extend(["--set", "data.max_images=10"]);
    assert_eq!(table(&run(&capped)).1, ["total", "5", "5", "10"]);
    // The cap is for PCam only: anywhere else it would silently do nothing.
    let out = run(&["config", "--set", "data.max_images=10"]);
    assert!(!out.status.success() && text(&out.stderr).contains("pcam:DIR sources only"), "{}", text(&out.stderr));

    // A split file missing.
    let valid_y = dir.join("camelyonpatch_level_2_split_valid_y.h5");
    let kept = std::fs::read(&valid_y).unwrap();
    std::fs::remove_file(&valid_y).unwrap();
    let out = run(&base);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("camelyonpatch_level_2_split_valid_y.h5") && stderr.contains("labels"), "{stderr}");
    // A truncated one.
    std::fs::write(&valid_y, &kept[..kept.len() / 2]).unwrap();
    let out = run(&base);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("camelyonpatch_level_2_split_valid_y.h5") && stderr.contains("HDF5"), "{stderr}");
}

/// `histofed site … 2>site.log` wrote ANSI colour codes into the file. Colour is for terminals only: a pipe or a
/// redirected stderr gets plain text.
#[test]
fn logs_to_a_pipe_or_a_file_carry_no_colour_codes() {
    let tmp = tempfile::tempdir().unwrap();
    // A site whose server never answers: it logs at info, warns, and gives up with an error after a second.
    let port = histofed::cluster::ports::free_port_pair().unwrap();
    let config = tmp.path().join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[data]\nper_class = 8\npartition = \"iid\"\n\n[model]\npreset = \"tiny\"\n\n[cluster]\nserver_addr = \"127.0.0.1:{port}\"\n\
             reconnect_secs = 0.1\nsite_give_up_secs = 1.0\n\n[runtime]\nout_dir = \"{}\"\n\n[evaluation]\n\
             eval_every = 0\nat_sites = false\n",
            tmp.path().join("run").display()
        ),
    )
    .unwrap();
    let args = ["site", "--config", config.to_str().unwrap(), "--site-id", "0"];

    let piped = histofed(&args).stdout(Stdio::null()).stderr(Stdio::piped()).output().unwrap();
    let log_path = tmp.path().join("site.log");
    let file = std::fs::File::create(&log_path).unwrap();
    let redirected = histofed(&args).stdout(Stdio::null()).stderr(Stdio::from(file)).status().unwrap();
    let to_file = std::fs::read(&log_path).unwrap();

    for (what, status, bytes) in [("a pipe", piped.status, &piped.stderr), ("a file", redirected, &to_file)] {
        let log = text(bytes);
        assert!(!status.success(), "the site gives up: {log}");
        assert!(log.contains("INFO") && log.contains("ERROR"), "levels are logged to {what}:\n{log}");
        assert!(!bytes.contains(&0x1b), "ESC (ANSI colour) in the log written to {what}:\n{log:?}");
    }
}
