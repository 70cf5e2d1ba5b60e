//! The three kinds of data, their mixing ratio (with the papers' presets) and the
//! deterministic assignment of batch rows to kinds.

use serde::{Deserialize, Serialize};

/// A kind of training data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// Multimodal understanding (conversations about images).
    Understanding,
    /// Text-only conversations.
    Text,
    /// Text-to-image pairs.
    Generation,
}

impl Kind {
    /// The three kinds, in ratio order.
    pub const ALL: [Kind; 3] = [Kind::Understanding, Kind::Text, Kind::Generation];

    /// Position in [`Kind::ALL`].
    pub fn index(self) -> usize {
        match self {
            Kind::Understanding => 0,
            Kind::Text => 1,
            Kind::Generation => 2,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Understanding => "understanding",
            Kind::Text => "text",
            Kind::Generation => "generation",
        }
    }
}

/// Relative amounts of understanding : text-only : text-to-image rows.
///
/// Presets follow the data-ratio rows of the papers' training-hyperparameter tables
/// (multimodal : pure text : text-to-image):
///
/// | stage | Janus | Janus-Pro |
/// |---|---|---|
/// | I (adaptors + image head) | 1 : 0 : 1 | 1 : 0 : 3 |
/// | II (unified pretraining) | 2 : 3 : 5 | 2 : 3 : 5 |
/// | III (SFT) | 7 : 3 : 10 | 5 : 1 : 4 |
///
/// The stage-III change from 7:3:10 to 5:1:4 is stated in the Janus-Pro text (§2.2, "Modified
/// data ratio in Stage III"). The stage-I and stage-II rows are taken from the papers'
/// hyperparameter tables as recalled, not re-checked against the PDFs here; treat them as
/// defaults to override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixRatio {
    /// Weight of understanding rows.
    pub understanding: u32,
    /// Weight of text-only rows.
    pub text: u32,
    /// Weight of text-to-image rows.
    pub generation: u32,
}

impl Default for MixRatio {
    fn default() -> Self {
        Self::JANUS_PRO_STAGE_3
    }
}

impl MixRatio {
    /// Janus-Pro stage I: 1 : 0 : 3.
    pub const JANUS_PRO_STAGE_1: Self = Self::new(1, 0, 3);
    /// Janus-Pro stage II: 2 : 3 : 5.
    pub const JANUS_PRO_STAGE_2: Self = Self::new(2, 3, 5);
    /// Janus-Pro stage III: 5 : 1 : 4.
    pub const JANUS_PRO_STAGE_3: Self = Self::new(5, 1, 4);
    /// Janus stage I: 1 : 0 : 1.
    pub const JANUS_STAGE_1: Self = Self::new(1, 0, 1);
    /// Janus stage II: 2 : 3 : 5.
    pub const JANUS_STAGE_2: Self = Self::new(2, 3, 5);
    /// Janus stage III: 7 : 3 : 10.
    pub const JANUS_STAGE_3: Self = Self::new(7, 3, 10);

    /// A ratio `understanding : text : generation`.
    pub const fn new(understanding: u32, text: u32, generation: u32) -> Self {
        Self {
            understanding,
            text,
            generation,
        }
    }

    /// The Janus-Pro preset of stage 1, 2 or 3.
    pub fn janus_pro_stage(stage: u8) -> Option<Self> {
        match stage {
            1 => Some(Self::JANUS_PRO_STAGE_1),
            2 => Some(Self::JANUS_PRO_STAGE_2),
            3 => Some(Self::JANUS_PRO_STAGE_3),
            _ => None,
        }
    }

    /// The weight of one kind.
    pub fn weight(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Understanding => self.understanding,
            Kind::Text => self.text,
            Kind::Generation => self.generation,
        }
    }

    /// Sum of the weights.
    pub fn total(&self) -> u64 {
        Kind::ALL.iter().map(|&k| u64::from(self.weight(k))).sum()
    }
}

/// Assigns rows to kinds in proportion to a [`MixRatio`], deterministically.
///
/// Each row goes to the kind furthest behind its share (largest `wᵢ·(n+1) − cᵢ·W`, ties to
/// the earlier kind), so after `n` rows every kind has `⌊n·wᵢ/W⌋` or `⌈n·wᵢ/W⌉` rows: a batch
/// of `W·k` rows holds exactly `k·wᵢ` of kind `i`, smaller batches alternate. The only state
/// is the per-kind counts, which [`DataState`](super::DataState) saves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindScheduler {
    ratio: MixRatio,
    counts: [u64; 3],
}

impl KindScheduler {
    /// A scheduler that has assigned nothing yet.
    pub fn new(ratio: MixRatio) -> Self {
        Self::with_counts(ratio, [0; 3])
    }

    /// A scheduler continuing after `counts` rows of each kind.
    pub fn with_counts(ratio: MixRatio, counts: [u64; 3]) -> Self {
        Self { ratio, counts }
    }

    /// Rows assigned so far, per kind (in [`Kind::ALL`] order).
    pub fn counts(&self) -> [u64; 3] {
        self.counts
    }

    /// The kind of the next row. A ratio with total weight zero yields understanding rows.
    pub fn next_kind(&mut self) -> Kind {
        let n: u64 = self.counts.iter().sum();
        let total = i128::from(self.ratio.total());
        let mut best = Kind::Understanding;
        let mut best_deficit = i128::MIN;
        for kind in Kind::ALL {
            let w = i128::from(self.ratio.weight(kind));
            if w == 0 && total > 0 {
                continue;
            }
            let deficit = w * i128::from(n + 1) - i128::from(self.counts[kind.index()]) * total;
            if deficit > best_deficit {
                best = kind;
                best_deficit = deficit;
            }
        }
        self.counts[best.index()] += 1;
        best
    }
}

/// SplitMix64 finaliser.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives a seed from several numbers (seed, stream, epoch, …); stable across platforms.
pub(crate) fn mix_seed(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x4A41_4E55_535F_5253, |h, &p| splitmix(h ^ splitmix(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_shares_per_full_round() {
        let mut s = KindScheduler::new(MixRatio::JANUS_PRO_STAGE_3);
        for _ in 0..7 {
            let mut c = [0; 3];
            for _ in 0..10 {
                c[s.next_kind().index()] += 1;
            }
            assert_eq!(c, [5, 1, 4]);
        }
    }

    #[test]
    fn zero_weight_is_never_drawn() {
        let mut s = KindScheduler::new(MixRatio::JANUS_PRO_STAGE_1);
        for _ in 0..100 {
            assert_ne!(s.next_kind(), Kind::Text);
        }
        assert_eq!(s.counts(), [25, 0, 75]);
    }
}
