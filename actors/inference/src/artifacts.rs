//! The artifact folder: `ARTIFACT_DIR/vX.Y.Z/` holding `model_card.yaml`,
//! the weights (`*.safetensors`, or a PyTorch `state_dict` in `*.pt` read by
//! candle's pickle reader) and `preprocessor.json`.
//!
//! Loading refuses anything it cannot vouch for: every file in the folder
//! except the card must be listed in the card's `artifact_hashes` with a
//! matching sha256 (`sha256:<hex>` or bare hex), else
//! `ARTIFACT_VALIDATION_ERROR`; and the weights and statistics are parsed
//! from the very bytes that were hashed. Which version serves by default:
//! `MODEL_VERSION` if set, else the newest stable `vX.Y.Z` (a folder with a
//! suffix such as `v1.0.0-rc1` is listed but never chosen by default).
//! [`write_example`] makes the folder `flotilla model init` ships.

use crate::card::{expected_digest, sha256_hex, Activation, ModelCard, CARD_FILE};
use crate::preprocess::{PreprocessorStats, STATS_FILE};
use crate::torch_format::{write_state_dict, NamedTensor};
use candle_core::{Device, Tensor};
use flotilla_messages::inference::{ServingError, ServingErrorCode};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Why a version cannot be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArtifactError {
    /// An artifact is missing from the card or its hash does not match.
    #[error("{0}")]
    Validation(String),
    /// The folder, card, weights or statistics are unusable.
    #[error("{0}")]
    Loading(String),
    /// No folder of that name under the artifacts root.
    #[error("{0}")]
    NotFound(String),
}

impl ArtifactError {
    /// The serving error CarlaRL answers with.
    pub fn to_serving(&self) -> ServingError {
        match self {
            ArtifactError::Validation(m) => {
                ServingError::new(ServingErrorCode::ArtifactValidationError, m.clone())
            }
            ArtifactError::Loading(m) => {
                ServingError::new(ServingErrorCode::ModelLoadingError, m.clone())
            }
            ArtifactError::NotFound(m) => ServingError::new(ServingErrorCode::NotFound, m.clone()),
        }
    }
}

/// One version folder as `/versions` lists it.
#[derive(Debug, Clone)]
pub struct VersionEntry {
    /// The folder name.
    pub version: String,
    /// Whether it is a plain `vX.Y.Z`.
    pub stable: bool,
    /// Its card, or why it cannot be read.
    pub card: Result<ModelCard, String>,
}

/// A verified version, ready to become a [`crate::policy::Policy`].
#[derive(Debug, Clone)]
pub struct VerifiedArtifacts {
    /// The card.
    pub card: ModelCard,
    /// The weights by name.
    pub tensors: Vec<(String, Tensor)>,
    /// The preprocessing statistics.
    pub stats: PreprocessorStats,
    /// File → verified sha256 (bare hex).
    pub hashes: BTreeMap<String, String>,
}

/// `vX.Y.Z` → `(X, Y, Z)`; `None` for anything else.
pub fn stable_semver(name: &str) -> Option<(u64, u64, u64)> {
    let mut parts = name.strip_prefix('v')?.split('.');
    let mut next = || parts.next()?.parse::<u64>().ok();
    let v = (next()?, next()?, next()?);
    parts.next().is_none().then_some(v)
}

/// The root folder of all versions.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    root: PathBuf,
}

impl ArtifactStore {
    /// A store over `root` (`ARTIFACT_DIR`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ArtifactStore { root: root.into() }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every version folder (holding a card), newest stable first, then the rest by name.
    pub fn versions(&self) -> Vec<VersionEntry> {
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut entries: Vec<VersionEntry> = dir
            .flatten()
            .filter(|e| e.path().join(CARD_FILE).is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|version| VersionEntry {
                stable: stable_semver(&version).is_some(),
                card: std::fs::read_to_string(self.root.join(&version).join(CARD_FILE))
                    .map_err(|e| e.to_string())
                    .and_then(|y| ModelCard::parse(&y)),
                version,
            })
            .collect();
        entries.sort_by(|a, b| {
            let key = |e: &VersionEntry| std::cmp::Reverse(stable_semver(&e.version));
            key(a).cmp(&key(b)).then_with(|| a.version.cmp(&b.version))
        });
        entries
    }

    /// The version to serve: `requested` (`MODEL_VERSION`) if given, else the newest stable.
    pub fn choose(&self, requested: Option<&str>) -> Result<String, ArtifactError> {
        if let Some(v) = requested.filter(|v| !v.trim().is_empty()) {
            return Ok(v.trim().to_string());
        }
        self.versions()
            .into_iter()
            .find(|e| e.stable)
            .map(|e| e.version)
            .ok_or_else(|| {
                ArtifactError::Loading(format!(
                    "no stable vX.Y.Z version folder with a {CARD_FILE} in {}",
                    self.root.display()
                ))
            })
    }

    /// Reads and verifies `version`.
    pub fn load(&self, version: &str, device: &Device) -> Result<VerifiedArtifacts, ArtifactError> {
        let loading = ArtifactError::Loading;
        if version.is_empty() || version.contains(['/', '\\']) || version.starts_with('.') {
            return Err(loading(format!("{version:?} is not a version folder name")));
        }
        let dir = self.root.join(version);
        if !dir.is_dir() {
            return Err(ArtifactError::NotFound(format!(
                "no version folder {version:?} under {}",
                self.root.display()
            )));
        }
        let yaml = std::fs::read_to_string(dir.join(CARD_FILE)).map_err(|e| {
            loading(format!(
                "version {version}: cannot read {}: {e}",
                dir.join(CARD_FILE).display()
            ))
        })?;
        let card = ModelCard::parse(&yaml).map_err(loading)?;
        if card.version != version {
            return Err(loading(format!(
                "{CARD_FILE}: version {:?} does not match its folder {version:?}",
                card.version
            )));
        }
        let (files, hashes) = verified_files(&dir, &card)?;
        let weights_name = weights_file(&card, &files)?;
        let tensors = read_weights(&dir.join(&weights_name), &files[&weights_name], device)
            .map_err(|e| loading(format!("{weights_name}: {e}")))?;
        let stats_bytes = files.get(STATS_FILE).ok_or_else(|| {
            ArtifactError::Validation(format!(
                "{STATS_FILE} is missing or not listed in artifact_hashes"
            ))
        })?;
        let stats = PreprocessorStats::parse(stats_bytes).map_err(loading)?;
        Ok(VerifiedArtifacts {
            card,
            tensors,
            stats,
            hashes,
        })
    }
}

/// File name → contents.
type FileBytes = HashMap<String, Vec<u8>>;

/// Reads every file the card lists, checks its hash, and checks that no
/// other file sits in the folder unverified.
fn verified_files(
    dir: &Path,
    card: &ModelCard,
) -> Result<(FileBytes, BTreeMap<String, String>), ArtifactError> {
    let invalid = ArtifactError::Validation;
    let mut files = HashMap::new();
    let mut hashes = BTreeMap::new();
    for (name, expected) in &card.artifact_hashes {
        if name.contains("..") || name.starts_with('/') {
            return Err(invalid(format!(
                "artifact_hashes: {name:?} leaves the version folder"
            )));
        }
        let want = expected_digest(expected).ok_or_else(|| {
            invalid(format!(
                "artifact_hashes.{name}: {expected:?} is not a sha256 (sha256:<64 hex> or 64 hex)"
            ))
        })?;
        let bytes = std::fs::read(dir.join(name)).map_err(|e| {
            invalid(format!(
                "artifact {name} is listed in {CARD_FILE} but cannot be read: {e}"
            ))
        })?;
        let got = sha256_hex(&bytes);
        if got != want {
            return Err(invalid(format!(
                "artifact {name}: sha256 mismatch (card says {want}, file is {got})"
            )));
        }
        hashes.insert(name.clone(), got);
        files.insert(name.clone(), bytes);
    }
    let dir_entries = std::fs::read_dir(dir)
        .map_err(|e| ArtifactError::Loading(format!("{}: {e}", dir.display())))?;
    for entry in dir_entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name != CARD_FILE && entry.path().is_file() && !files.contains_key(&name) {
            return Err(invalid(format!(
                "artifact {name} has no sha256 in {CARD_FILE}'s artifact_hashes"
            )));
        }
    }
    Ok((files, hashes))
}

fn is_pytorch(name: &str) -> bool {
    [".pt", ".pth", ".bin"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// The weights file: the `.safetensors` one, or the PyTorch one for
/// `model_type: pytorch` when there is no safetensors file.
fn weights_file(
    card: &ModelCard,
    files: &HashMap<String, Vec<u8>>,
) -> Result<String, ArtifactError> {
    let mut names: Vec<&String> = files.keys().collect();
    names.sort();
    let safetensors = names.iter().find(|n| n.ends_with(".safetensors"));
    let pytorch = names.iter().find(|n| is_pytorch(n));
    let prefer_pt = card.model_type.eq_ignore_ascii_case("pytorch") && safetensors.is_none();
    match (safetensors, pytorch) {
        (_, Some(pt)) if prefer_pt => Ok((*pt).clone()),
        (Some(st), _) => Ok((*st).clone()),
        (None, Some(pt)) => Ok((*pt).clone()),
        (None, None) => Err(ArtifactError::Validation(
            "no weights (*.safetensors or *.pt) listed in artifact_hashes".into(),
        )),
    }
}

fn read_weights(
    path: &Path,
    bytes: &[u8],
    device: &Device,
) -> Result<Vec<(String, Tensor)>, String> {
    let name = path.to_string_lossy();
    if is_pytorch(&name) {
        let tensors = candle_core::pickle::read_all(path).map_err(|e| e.to_string())?;
        return tensors
            .into_iter()
            .map(|(n, t)| t.to_device(device).map(|t| (n, t)))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string());
    }
    let map = candle_core::safetensors::load_buffer(bytes, device).map_err(|e| e.to_string())?;
    Ok(map.into_iter().collect())
}

/// How `model init` stores the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightsFormat {
    /// `model.safetensors`.
    #[default]
    Safetensors,
    /// `model.pt`, a PyTorch `state_dict` as CarlaRL ships it.
    Pytorch,
}

/// CarlaRL's example network with weights drawn from `seed` (Glorot
/// uniform) and its output bias `[0.5, -2.0, 0.0]`: name, values, shape.
fn example_weights(seed: u64) -> Vec<(String, Vec<f32>, Vec<usize>)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let sizes = [5usize, 64, 64, 3];
    let mut tensors = Vec::new();
    for (i, pair) in sizes.windows(2).enumerate() {
        let (inp, out) = (pair[0], pair[1]);
        let bound = (6.0 / (inp + out) as f32).sqrt();
        let w: Vec<f32> = (0..inp * out)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let b = if i == sizes.len() - 2 {
            vec![0.5, -2.0, 0.0]
        } else {
            vec![0.0; out]
        };
        tensors.push((format!("net.{}.weight", 2 * i), w, vec![out, inp]));
        tensors.push((format!("net.{}.bias", 2 * i), b, vec![out]));
    }
    tensors
}

fn write_weights(path: &Path, format: WeightsFormat, seed: u64) -> Result<(), String> {
    let tensors = example_weights(seed);
    match format {
        WeightsFormat::Pytorch => {
            let named: Vec<NamedTensor> = tensors
                .iter()
                .map(|(name, values, shape)| NamedTensor {
                    name,
                    values,
                    shape,
                })
                .collect();
            write_state_dict(path, &named)
        }
        WeightsFormat::Safetensors => {
            let map = tensors
                .into_iter()
                .map(|(name, values, shape)| {
                    Tensor::from_vec(values, shape, &Device::Cpu).map(|t| (name, t))
                })
                .collect::<Result<HashMap<_, _>, _>>()
                .map_err(|e| e.to_string())?;
            // Serialized in memory and written as the other files are:
            // `candle_core::safetensors::save` goes through a tempfile
            // (mode 0600), which a worker running as another user cannot read.
            let bytes = safetensors::serialize(&map, None).map_err(|e| e.to_string())?;
            std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
        }
    }
}

/// Writes CarlaRL's example policy to `root/version/`: 5 → 64 (ReLU) → 64
/// (ReLU) → 3 (Tanh) with weights drawn from `seed`, the output bias
/// `[0.5, -2.0, 0.0]` CarlaRL's example uses, its preprocessing statistics,
/// and a card with the real sha256 of each file. Returns the folder.
pub fn write_example(
    root: &Path,
    version: &str,
    seed: u64,
    format: WeightsFormat,
) -> Result<PathBuf, String> {
    if stable_semver(version).is_none() {
        return Err(format!("version: {version:?} is not vX.Y.Z"));
    }
    let dir = root.join(version);
    if dir.join(CARD_FILE).exists() {
        return Err(format!("{} exists already", dir.join(CARD_FILE).display()));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (weights_name, model_type) = match format {
        WeightsFormat::Safetensors => ("model.safetensors", "safetensors"),
        WeightsFormat::Pytorch => ("model.pt", "pytorch"),
    };
    let weights = dir.join(weights_name);
    write_weights(&weights, format, seed)?;
    let stats = serde_json::to_vec_pretty(&PreprocessorStats::carla_example())
        .map_err(|e| e.to_string())?;
    std::fs::write(dir.join(STATS_FILE), &stats).map_err(|e| e.to_string())?;
    let weights_bytes = std::fs::read(&weights).map_err(|e| e.to_string())?;
    let card = ModelCard {
        model_name: "carla-ppo".into(),
        version: version.into(),
        model_type: model_type.into(),
        description: Some(format!(
            "Example CarlaRL-shaped driving policy with untrained weights (seed {seed}), written by `flotilla model init`"
        )),
        input_shape: Some(vec![5]),
        output_shape: Some(vec![3]),
        framework_version: Some("candle-core 0.11".into()),
        performance_metrics: BTreeMap::new(),
        artifact_hashes: BTreeMap::from([
            (weights_name.to_string(), format!("sha256:{}", sha256_hex(&weights_bytes))),
            (STATS_FILE.to_string(), sha256_hex(&stats)),
        ]),
        activations: vec![Activation::Relu, Activation::Relu, Activation::Tanh],
        action_std: Some(0.1),
    };
    std::fs::write(dir.join(CARD_FILE), card.to_yaml()).map_err(|e| e.to_string())?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_files_share_one_mode() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let mode = |dir: &Path, name: &str| {
            std::fs::metadata(dir.join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        for format in [WeightsFormat::Safetensors, WeightsFormat::Pytorch] {
            let version = match format {
                WeightsFormat::Safetensors => "v0.1.0",
                WeightsFormat::Pytorch => "v0.2.0",
            };
            let dir = write_example(root.path(), version, 1, format).unwrap();
            let weights = match format {
                WeightsFormat::Safetensors => "model.safetensors",
                WeightsFormat::Pytorch => "model.pt",
            };
            let card = mode(&dir, CARD_FILE);
            assert_eq!(card & 0o044, 0o044, "the card is readable by all: {card:o}");
            for name in [weights, STATS_FILE] {
                assert_eq!(mode(&dir, name), card, "{name} of {version}");
            }
        }
    }

    #[test]
    fn the_example_loads_and_verifies() {
        let root = tempfile::tempdir().unwrap();
        write_example(root.path(), "v0.1.0", 7, WeightsFormat::Safetensors).unwrap();
        let store = ArtifactStore::new(root.path());
        let a = store.load("v0.1.0", &Device::Cpu).unwrap();
        assert_eq!(a.card.model_name, "carla-ppo");
        assert_eq!(a.hashes.len(), 2);
    }

    #[test]
    fn a_pytorch_state_dict_serves_the_same_network() {
        let root = tempfile::tempdir().unwrap();
        write_example(root.path(), "v0.1.0", 3, WeightsFormat::Safetensors).unwrap();
        write_example(root.path(), "v0.2.0", 3, WeightsFormat::Pytorch).unwrap();
        let store = ArtifactStore::new(root.path());
        let mut st = store.load("v0.1.0", &Device::Cpu).unwrap().tensors;
        let mut pt = store.load("v0.2.0", &Device::Cpu).unwrap().tensors;
        st.sort_by(|a, b| a.0.cmp(&b.0));
        pt.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(st.len(), pt.len());
        for ((n1, t1), (n2, t2)) in st.iter().zip(&pt) {
            assert_eq!(n1, n2);
            let (a, b) = (t1.flatten_all().unwrap(), t2.flatten_all().unwrap());
            assert_eq!(a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
        }
    }

    #[test]
    fn a_changed_byte_is_an_artifact_validation_error() {
        let root = tempfile::tempdir().unwrap();
        let dir = write_example(root.path(), "v0.1.0", 7, WeightsFormat::Safetensors).unwrap();
        let mut bytes = std::fs::read(dir.join(STATS_FILE)).unwrap();
        bytes.push(b' ');
        std::fs::write(dir.join(STATS_FILE), bytes).unwrap();
        let e = ArtifactStore::new(root.path())
            .load("v0.1.0", &Device::Cpu)
            .unwrap_err();
        assert!(
            matches!(&e, ArtifactError::Validation(m) if m.contains("mismatch")),
            "{e}"
        );
        assert_eq!(
            e.to_serving().code,
            ServingErrorCode::ArtifactValidationError
        );
    }

    #[test]
    fn a_missing_folder_is_not_found() {
        let root = tempfile::tempdir().unwrap();
        let e = ArtifactStore::new(root.path())
            .load("v9.9.9", &Device::Cpu)
            .unwrap_err();
        assert!(matches!(&e, ArtifactError::NotFound(_)), "{e}");
        assert_eq!(e.to_serving().code, ServingErrorCode::NotFound);
    }

    #[test]
    fn an_unlisted_file_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = write_example(root.path(), "v0.1.0", 7, WeightsFormat::Safetensors).unwrap();
        std::fs::write(dir.join("extra.pt"), b"x").unwrap();
        let e = ArtifactStore::new(root.path())
            .load("v0.1.0", &Device::Cpu)
            .unwrap_err();
        assert!(e.to_string().contains("extra.pt has no sha256"), "{e}");
    }

    #[test]
    fn the_newest_stable_version_is_chosen() {
        let root = tempfile::tempdir().unwrap();
        for v in ["v0.9.0", "v0.10.0", "v0.2.1"] {
            write_example(root.path(), v, 1, WeightsFormat::Safetensors).unwrap();
        }
        let rc = root.path().join("v1.0.0-rc1");
        std::fs::create_dir_all(&rc).unwrap();
        std::fs::copy(
            root.path().join("v0.9.0").join(CARD_FILE),
            rc.join(CARD_FILE),
        )
        .unwrap();
        let store = ArtifactStore::new(root.path());
        assert_eq!(store.choose(None).unwrap(), "v0.10.0");
        assert_eq!(store.choose(Some("v0.2.1")).unwrap(), "v0.2.1");
        let listed: Vec<_> = store
            .versions()
            .into_iter()
            .map(|e| (e.version, e.stable))
            .collect();
        assert_eq!(listed[0], ("v0.10.0".to_string(), true));
        assert!(listed.contains(&("v1.0.0-rc1".to_string(), false)));
    }
}
