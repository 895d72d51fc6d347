//! NeuMF and DLRM-style networks over gathered embedding rows, with binary cross-entropy.
//!
//! A model sees one batch as `emb` (for every row, each sparse field's embedding of width
//! [`Model::emb_dim`], fields in order) and `dense` (standardised numeric features). It
//! returns logits, or the mean loss plus gradients for its dense parameters and for every
//! gathered embedding row — the caller pushes those to the sparse tables.

use std::ops::Range;

use crate::nn::{InitRng, Linear, Mlp, MlpCache, ParamLayout, ParamSpec};

/// Architecture, as a config names it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Architecture {
    /// NeuMF (He et al., 2017): GMF ⊙ tower plus an MLP tower, fused by a linear layer.
    Neumf {
        /// Sparse fields summed into the user vector (by index into the sparse field list).
        user: Vec<usize>,
        /// Sparse fields summed into the item vector.
        item: Vec<usize>,
        /// Width of the GMF part of each embedding row.
        gmf_dim: usize,
        /// Width of the MLP part of each embedding row (the MLP input is both, plus dense).
        mlp_dim: usize,
        /// Hidden widths of the MLP tower.
        layers: Vec<usize>,
    },
    /// DLRM-style: dense → bottom MLP, sparse → embeddings, interaction, top MLP → logit.
    Dlrm {
        /// Embedding width (the bottom MLP ends at this width).
        emb_dim: usize,
        /// Hidden widths of the bottom MLP (it gains a last layer of `emb_dim`).
        bottom: Vec<usize>,
        /// Hidden widths of the top MLP (it gains a last layer of width 1).
        top: Vec<usize>,
        /// `dot` (pairwise dot products, as DLRM) or `cat` (concatenation).
        interaction: Interaction,
    },
}

/// How DLRM combines its feature vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interaction {
    /// Pairwise dot products of all vectors, plus the bottom MLP's output.
    Dot,
    /// All vectors concatenated.
    Cat,
}

/// Fewest rows in a block of [`Model::loss_and_grads_parts`].
pub const ROWS_PER_PART: usize = 16;

/// One batch as a model sees it.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Rows.
    pub size: usize,
    /// `size × fields × emb_dim` gathered embedding values.
    pub emb: &'a [f32],
    /// `size × dense` standardised dense features.
    pub dense: &'a [f32],
}

/// A network with its parameter layout.
#[derive(Debug, Clone)]
pub struct Model {
    layout: ParamLayout,
    fields: usize,
    dense: usize,
    net: Net,
}

#[derive(Debug, Clone)]
enum Net {
    Neumf {
        user: Vec<usize>,
        item: Vec<usize>,
        g: usize,
        m: usize,
        mlp: Mlp,
        predict: Linear,
    },
    Dlrm {
        d: usize,
        bottom: Option<Mlp>,
        top: Mlp,
        interaction: Interaction,
    },
}

/// A configuration that cannot make a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("model: {0}")]
pub struct ModelError(pub String);

impl Model {
    /// Build `arch` for `fields` sparse fields and `dense` dense features.
    pub fn new(arch: &Architecture, fields: usize, dense: usize) -> Result<Model, ModelError> {
        let mut layout = ParamLayout::default();
        let net = match arch {
            Architecture::Neumf {
                user,
                item,
                gmf_dim,
                mlp_dim,
                layers,
            } => {
                if user.is_empty() || item.is_empty() {
                    return Err(ModelError(
                        "neumf needs at least one user field and one item field".into(),
                    ));
                }
                if let Some(f) = user.iter().chain(item).find(|f| **f >= fields) {
                    return Err(ModelError(format!(
                        "neumf field index {f} out of range ({fields} sparse fields)"
                    )));
                }
                if gmf_dim + mlp_dim == 0 {
                    return Err(ModelError("neumf needs gmf_dim or mlp_dim > 0".into()));
                }
                if layers.contains(&0) {
                    return Err(ModelError("layer widths must be positive".into()));
                }
                let mlp_in = 2 * mlp_dim + dense;
                let mlp = Mlp::new(&mut layout, "mlp", mlp_in, layers, true);
                let tower = if *mlp_dim > 0 || dense > 0 {
                    mlp.out_width(mlp_in)
                } else {
                    0
                };
                let predict = Linear::new(&mut layout, "predict", gmf_dim + tower, 1);
                Net::Neumf {
                    user: user.clone(),
                    item: item.clone(),
                    g: *gmf_dim,
                    m: *mlp_dim,
                    mlp,
                    predict,
                }
            }
            Architecture::Dlrm {
                emb_dim,
                bottom,
                top,
                interaction,
            } => {
                if *emb_dim == 0 {
                    return Err(ModelError("dlrm emb_dim must be positive".into()));
                }
                if bottom.contains(&0) || top.contains(&0) {
                    return Err(ModelError("layer widths must be positive".into()));
                }
                if fields + usize::from(dense > 0) < 2 && *interaction == Interaction::Dot {
                    return Err(ModelError(
                        "dot interaction needs at least two vectors (sparse fields, or dense features plus one sparse field)".into(),
                    ));
                }
                let bottom = (dense > 0).then(|| {
                    let mut widths = bottom.clone();
                    widths.push(*emb_dim);
                    Mlp::new(&mut layout, "bottom", dense, &widths, true)
                });
                let vectors = fields + usize::from(dense > 0);
                let top_in = match interaction {
                    Interaction::Dot => {
                        usize::from(dense > 0) * emb_dim + vectors * (vectors - 1) / 2
                    }
                    Interaction::Cat => vectors * emb_dim,
                };
                let mut widths = top.clone();
                widths.push(1);
                let top = Mlp::new(&mut layout, "top", top_in, &widths, false);
                Net::Dlrm {
                    d: *emb_dim,
                    bottom,
                    top,
                    interaction: *interaction,
                }
            }
        };
        Ok(Model {
            layout,
            fields,
            dense,
            net,
        })
    }

    /// Where each dense tensor sits in the parameter buffer.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// Multiply-adds of the dense layers' forward pass for one row (the sum of every 2-D
    /// weight's size): what a row costs to compute, next to what it costs to read.
    pub fn multiply_adds_per_row(&self) -> usize {
        self.layout
            .specs()
            .iter()
            .filter(|s| s.shape.len() == 2)
            .map(ParamSpec::len)
            .sum()
    }

    /// Width of every embedding row this model reads.
    pub fn emb_dim(&self) -> usize {
        match &self.net {
            Net::Neumf { g, m, .. } => g + m,
            Net::Dlrm { d, .. } => *d,
        }
    }

    /// Sparse fields per row.
    pub fn fields(&self) -> usize {
        self.fields
    }

    /// Dense features per row.
    pub fn dense(&self) -> usize {
        self.dense
    }

    /// Fresh parameters, deterministic for `seed`.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut p = vec![0.0; self.layout.total()];
        let mut rng = InitRng::new(seed);
        match &self.net {
            Net::Neumf { mlp, predict, .. } => {
                mlp.init(&mut p, &mut rng);
                predict.init(&mut p, &mut rng);
            }
            Net::Dlrm { bottom, top, .. } => {
                if let Some(b) = bottom {
                    b.init(&mut p, &mut rng);
                }
                top.init(&mut p, &mut rng);
            }
        }
        p
    }

    fn check(&self, params: &[f32], b: &Batch<'_>) {
        assert_eq!(params.len(), self.layout.total(), "parameter buffer size");
        assert_eq!(
            b.emb.len(),
            b.size * self.fields * self.emb_dim(),
            "embedding input size"
        );
        assert_eq!(b.dense.len(), b.size * self.dense, "dense input size");
    }

    /// Logits for every row of `batch`.
    pub fn forward(&self, params: &[f32], batch: &Batch<'_>) -> Vec<f32> {
        self.check(params, batch);
        let mut st = State::default();
        self.run(params, batch, &mut st);
        st.logits
    }

    /// Mean (weighted) binary cross-entropy of `batch` against `labels`, accumulating the
    /// dense gradient into `grads` and writing d loss / d emb (same shape as `batch.emb`) into
    /// `emb_grads`. `weights` (one per row) scale each row's loss; `None` means 1.
    pub fn loss_and_grads(
        &self,
        params: &[f32],
        batch: &Batch<'_>,
        labels: &[f32],
        weights: Option<&[f32]>,
        grads: &mut [f32],
        emb_grads: &mut Vec<f32>,
    ) -> f32 {
        self.loss_and_grads_hooked(
            params,
            batch,
            labels,
            weights,
            grads,
            emb_grads,
            &mut |_, _| {},
        )
    }

    /// The parameter ranges, one per layer, in the order the backward pass finishes them
    /// (output layer first); together they cover the buffer exactly once.
    pub fn backward_order(&self) -> Vec<Range<usize>> {
        match &self.net {
            Net::Neumf { mlp, predict, .. } => std::iter::once(predict.range())
                .chain(mlp.backward_order())
                .collect(),
            Net::Dlrm { bottom, top, .. } => top
                .backward_order()
                .chain(bottom.iter().flat_map(Mlp::backward_order))
                .collect(),
        }
    }

    /// [`Model::loss_and_grads`], calling `ready` with each layer's range of
    /// [`Model::backward_order`] and its gradient as soon as that gradient is final — so a
    /// data-parallel caller can start reducing the top layers while the rest of the backward
    /// pass runs.
    #[allow(clippy::too_many_arguments)]
    pub fn loss_and_grads_hooked(
        &self,
        params: &[f32],
        batch: &Batch<'_>,
        labels: &[f32],
        weights: Option<&[f32]>,
        grads: &mut [f32],
        emb_grads: &mut Vec<f32>,
        ready: &mut dyn FnMut(Range<usize>, &[f32]),
    ) -> f32 {
        self.check(params, batch);
        assert_eq!(labels.len(), batch.size, "labels");
        assert_eq!(grads.len(), params.len(), "gradient buffer size");
        let mut st = State::default();
        self.run(params, batch, &mut st);
        let (loss, dz) = bce_with_logits(&st.logits, labels, weights);
        emb_grads.clear();
        emb_grads.resize(batch.emb.len(), 0.0);
        self.back(params, batch, &st, &dz, grads, emb_grads, ready);
        loss
    }

    /// [`Model::loss_and_grads`] with the batch's rows split into up to `parts` consecutive
    /// blocks (at least [`ROWS_PER_PART`] rows each), whose forward and backward passes are
    /// rayon tasks: run from a rayon pool, they go over its threads, and a block no other
    /// thread has taken yet runs on the calling one. Each block's dense gradient goes to a
    /// buffer of its own and the buffers are added in block order, so the result depends only
    /// on the number of blocks (not on the threads that ran them): the same inputs and
    /// `parts` give the same bits every time, and the sums differ from one block's
    /// (`parts = 1`) only in rounding.
    #[allow(clippy::too_many_arguments)]
    pub fn loss_and_grads_parts(
        &self,
        parts: usize,
        params: &[f32],
        batch: &Batch<'_>,
        labels: &[f32],
        weights: Option<&[f32]>,
        grads: &mut [f32],
        emb_grads: &mut Vec<f32>,
    ) -> f32 {
        use rayon::prelude::*;
        let n = batch.size;
        let total = bce_total(weights, n);
        let parts = parts.min(n / ROWS_PER_PART).max(1);
        let (fd, dw) = (self.fields * self.emb_dim(), self.dense);
        if parts == 1 || total <= 0.0 || fd == 0 {
            return self.loss_and_grads(params, batch, labels, weights, grads, emb_grads);
        }
        self.check(params, batch);
        assert_eq!(labels.len(), n, "labels");
        assert_eq!(grads.len(), params.len(), "gradient buffer size");
        let rows = n.div_ceil(parts);
        let parts = n.div_ceil(rows);
        emb_grads.clear();
        emb_grads.resize(batch.emb.len(), 0.0);
        let mut scratch: Vec<Vec<f32>> = (1..parts).map(|_| vec![0.0; grads.len()]).collect();
        let mut losses = vec![0.0f64; parts];
        let outs: Vec<&mut [f32]> = std::iter::once(&mut *grads)
            .chain(scratch.iter_mut().map(Vec::as_mut_slice))
            .collect();
        let jobs: Vec<_> = outs
            .into_iter()
            .zip(emb_grads.chunks_mut(rows * fd))
            .zip(losses.iter_mut())
            .enumerate()
            .collect();
        jobs.into_par_iter()
            .with_max_len(1)
            .for_each(|(k, ((g, de), loss))| {
                let r = k * rows..((k + 1) * rows).min(n);
                let sub = Batch {
                    size: r.len(),
                    emb: &batch.emb[r.start * fd..r.end * fd],
                    dense: &batch.dense[r.start * dw..r.end * dw],
                };
                let mut st = State::default();
                self.run(params, &sub, &mut st);
                let w = weights.map(|w| &w[r.clone()]);
                let (l, dz) = bce_terms(&st.logits, &labels[r], w, total);
                *loss = l;
                self.back(params, &sub, &st, &dz, g, de, &mut |_, _| {});
            });
        for g in &scratch {
            add(grads, g);
        }
        (losses.iter().sum::<f64>() / total) as f32
    }

    fn run(&self, p: &[f32], b: &Batch<'_>, st: &mut State) {
        let n = b.size;
        let fd = self.fields * self.emb_dim();
        match &self.net {
            Net::Neumf {
                user,
                item,
                g,
                m,
                mlp,
                predict,
            } => {
                let d = g + m;
                let (g, m) = (*g, *m);
                st.u = vec![0.0; n * d];
                st.i = vec![0.0; n * d];
                for r in 0..n {
                    let row = &b.emb[r * fd..(r + 1) * fd];
                    for &f in user {
                        add(&mut st.u[r * d..(r + 1) * d], &row[f * d..(f + 1) * d]);
                    }
                    for &f in item {
                        add(&mut st.i[r * d..(r + 1) * d], &row[f * d..(f + 1) * d]);
                    }
                }
                let mlp_in = 2 * m + self.dense;
                let tower = mlp_in > 0;
                st.x = Vec::with_capacity(n * mlp_in);
                for r in 0..n {
                    st.x.extend_from_slice(&st.u[r * d + g..(r + 1) * d]);
                    st.x.extend_from_slice(&st.i[r * d + g..(r + 1) * d]);
                    st.x.extend_from_slice(&b.dense[r * self.dense..(r + 1) * self.dense]);
                }
                if tower {
                    // the user's columns first: `neumf_rank` computes that share once per user
                    mlp.forward_split(p, &st.x, n, m, &mut st.c1);
                }
                let h = if tower { st.c1.output() } else { &[][..] };
                let hw = if tower { mlp.out_width(mlp_in) } else { 0 };
                st.z = Vec::with_capacity(n * (g + hw));
                for r in 0..n {
                    for k in 0..g {
                        st.z.push(st.u[r * d + k] * st.i[r * d + k]);
                    }
                    st.z.extend_from_slice(&h[r * hw..(r + 1) * hw]);
                }
                predict.forward(p, &st.z, n, &mut st.logits);
            }
            Net::Dlrm {
                d,
                bottom,
                top,
                interaction,
            } => {
                let d = *d;
                if let Some(bm) = bottom {
                    bm.forward(p, b.dense, n, &mut st.c0);
                }
                let nv = self.fields + usize::from(bottom.is_some());
                // vectors per row: [bottom?, e_0 .. e_{F-1}]
                st.x = Vec::with_capacity(n * nv * d);
                for r in 0..n {
                    if bottom.is_some() {
                        st.x.extend_from_slice(&st.c0.output()[r * d..(r + 1) * d]);
                    }
                    st.x.extend_from_slice(&b.emb[r * fd..(r + 1) * fd]);
                }
                match interaction {
                    Interaction::Cat => st.z.clone_from(&st.x),
                    Interaction::Dot => {
                        let pairs = nv * (nv - 1) / 2;
                        let keep = if bottom.is_some() { d } else { 0 };
                        st.z = Vec::with_capacity(n * (keep + pairs));
                        for r in 0..n {
                            let v = &st.x[r * nv * d..(r + 1) * nv * d];
                            st.z.extend_from_slice(&v[..keep]);
                            for a in 0..nv {
                                for c in (a + 1)..nv {
                                    st.z.push(dot(&v[a * d..(a + 1) * d], &v[c * d..(c + 1) * d]));
                                }
                            }
                        }
                    }
                }
                top.forward(p, &st.z, n, &mut st.c1);
                st.logits = st.c1.output().to_vec();
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn back(
        &self,
        p: &[f32],
        b: &Batch<'_>,
        st: &State,
        dz_logit: &[f32],
        grads: &mut [f32],
        de: &mut [f32],
        ready: &mut dyn FnMut(Range<usize>, &[f32]),
    ) {
        let n = b.size;
        let fd = self.fields * self.emb_dim();
        match &self.net {
            Net::Neumf {
                user,
                item,
                g,
                m,
                mlp,
                predict,
            } => {
                let (g, m) = (*g, *m);
                let d = g + m;
                let mut dzz = Vec::new();
                predict.backward(p, &st.z, dz_logit, n, grads, Some(&mut dzz));
                let r = predict.range();
                ready(r.clone(), &grads[r]);
                let mlp_in = 2 * m + self.dense;
                let hw = if mlp_in > 0 { mlp.out_width(mlp_in) } else { 0 };
                let zw = g + hw;
                let mut du = vec![0.0; n * d];
                let mut di = vec![0.0; n * d];
                let mut dh = Vec::with_capacity(n * hw);
                for r in 0..n {
                    for k in 0..g {
                        let dg = dzz[r * zw + k];
                        du[r * d + k] = dg * st.i[r * d + k];
                        di[r * d + k] = dg * st.u[r * d + k];
                    }
                    dh.extend_from_slice(&dzz[r * zw + g..(r + 1) * zw]);
                }
                if mlp_in > 0 {
                    let mut dx = Vec::new();
                    mlp.backward(p, &st.x, n, &st.c1, &dh, grads, Some(&mut dx), ready);
                    for r in 0..n {
                        let row = &dx[r * mlp_in..(r + 1) * mlp_in];
                        du[r * d + g..(r + 1) * d].copy_from_slice(&row[..m]);
                        di[r * d + g..(r + 1) * d].copy_from_slice(&row[m..2 * m]);
                    }
                }
                for r in 0..n {
                    let row = &mut de[r * fd..(r + 1) * fd];
                    for &f in user {
                        add(&mut row[f * d..(f + 1) * d], &du[r * d..(r + 1) * d]);
                    }
                    for &f in item {
                        add(&mut row[f * d..(f + 1) * d], &di[r * d..(r + 1) * d]);
                    }
                }
            }
            Net::Dlrm {
                d,
                bottom,
                top,
                interaction,
            } => {
                let d = *d;
                let nv = self.fields + usize::from(bottom.is_some());
                let mut dz = Vec::new();
                top.backward(p, &st.z, n, &st.c1, dz_logit, grads, Some(&mut dz), ready);
                let mut dx = vec![0.0; n * nv * d];
                match interaction {
                    Interaction::Cat => dx.copy_from_slice(&dz),
                    Interaction::Dot => {
                        let pairs = nv * (nv - 1) / 2;
                        let keep = if bottom.is_some() { d } else { 0 };
                        let zw = keep + pairs;
                        for r in 0..n {
                            let v = &st.x[r * nv * d..(r + 1) * nv * d];
                            let dzr = &dz[r * zw..(r + 1) * zw];
                            let dv = &mut dx[r * nv * d..(r + 1) * nv * d];
                            dv[..keep].copy_from_slice(&dzr[..keep]);
                            let mut q = keep;
                            for a in 0..nv {
                                for c in (a + 1)..nv {
                                    let s = dzr[q];
                                    q += 1;
                                    for k in 0..d {
                                        dv[a * d + k] += s * v[c * d + k];
                                        dv[c * d + k] += s * v[a * d + k];
                                    }
                                }
                            }
                        }
                    }
                }
                let skip = if bottom.is_some() { d } else { 0 };
                let mut dbottom = Vec::with_capacity(n * skip);
                for r in 0..n {
                    let dv = &dx[r * nv * d..(r + 1) * nv * d];
                    dbottom.extend_from_slice(&dv[..skip]);
                    de[r * fd..(r + 1) * fd].copy_from_slice(&dv[skip..]);
                }
                if let Some(bm) = bottom {
                    bm.backward(p, b.dense, n, &st.c0, &dbottom, grads, None, ready);
                }
            }
        }
    }
}

/// NeuMF's item side of a set of candidate items, computed once (see [`Model::neumf_items`]):
/// their GMF vectors and their share of the first MLP layer (or, for a model without MLP
/// layers, their part of the tower's input).
#[derive(Debug, Clone, Default)]
pub struct NeumfItems {
    n: usize,
    /// The summed item vectors' GMF part, stored column by column (`gmf × n`).
    gmf_t: Vec<f32>,
    /// `n × (mlp + dense)`: the MLP input after the user's part, `[i_mlp | dense]`; kept only
    /// when the model has no MLP layers (the tower is then its input).
    x1: Vec<f32>,
    /// `x1 · W[:, mlp..]ᵀ` (no bias), the items' share of the first MLP layer, stored column
    /// by column (`width of the first layer × n`: a unit's values over a run of items are
    /// contiguous); empty when the model has no MLP layers.
    ct: Vec<f32>,
    /// Each first-layer unit's largest share over the items: a user whose part `a` has
    /// `a + cmax ≤ 0` leaves that unit dead (zero after the ReLU) for every item.
    cmax: Vec<f32>,
}

impl NeumfItems {
    /// Items held.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// Items [`Model::neumf_rank`] takes through the network at a time: the block's activations
/// stay in the core's caches instead of a catalogue-sized buffer per layer. Each item's
/// logit is the same whatever the block (the matrix kernel computes each output as one sum
/// over its inputs, whatever the rows beside it).
pub const RANK_BLOCK: usize = 128;

impl Model {
    /// For a NeuMF: the item side of every row of `batch` — its item fields and its dense
    /// features (the caller vouches that those belong to the item, not the user) — for
    /// [`Model::neumf_rank`]. `None` for other models.
    pub fn neumf_items(&self, params: &[f32], batch: &Batch<'_>) -> Option<NeumfItems> {
        let Net::Neumf {
            item, g, m, mlp, ..
        } = &self.net
        else {
            return None;
        };
        self.check(params, batch);
        let (g, m, nd) = (*g, *m, self.dense);
        let d = g + m;
        let fd = self.fields * d;
        let n = batch.size;
        let w1 = m + nd;
        let mut gmf = Vec::with_capacity(n * g);
        let mut x1 = Vec::with_capacity(n * w1);
        let mut i = vec![0.0; d];
        for r in 0..n {
            let row = &batch.emb[r * fd..(r + 1) * fd];
            i.fill(0.0);
            for &f in item {
                add(&mut i, &row[f * d..(f + 1) * d]);
            }
            gmf.extend_from_slice(&i[..g]);
            x1.extend_from_slice(&i[g..]);
            x1.extend_from_slice(&batch.dense[r * nd..(r + 1) * nd]);
        }
        let (mut ct, mut cmax) = (Vec::new(), Vec::new());
        if let (true, Some(first)) = (w1 > 0, mlp.first()) {
            let mut c = vec![0.0; n * first.out];
            if n > 0 {
                let xv = ndarray::ArrayView2::from_shape((n, w1), &x1[..])
                    .expect("x1 holds n × (mlp + dense) values");
                first.accumulate(params, xv, m..m + w1, 0.0, &mut c);
            }
            ct = (0..first.out)
                .flat_map(|k| c.iter().skip(k).step_by(first.out).copied())
                .collect();
            cmax = ct
                .chunks(n.max(1))
                .map(|col| col.iter().copied().fold(f32::NEG_INFINITY, f32::max))
                .collect();
            cmax.resize(first.out, f32::NEG_INFINITY);
        }
        if mlp.first().is_some() {
            x1 = Vec::new();
        }
        let gmf_t = (0..g)
            .flat_map(|k| gmf.iter().skip(k).step_by(g))
            .copied()
            .collect();
        Some(NeumfItems {
            n,
            gmf_t,
            x1,
            ct,
            cmax,
        })
    }

    /// Logits of the rows (the user of `user`'s first row, item k of `items`) for every k: bit
    /// for bit what [`Model::forward`] gives for those rows, with the user's vector and its
    /// share of the first MLP layer computed once instead of once per item, and the items
    /// taken [`RANK_BLOCK`] at a time. `user` is a one-row batch whose user fields are read;
    /// `items` came from [`Model::neumf_items`] of this model.
    pub fn neumf_rank(&self, params: &[f32], user: &Batch<'_>, items: &NeumfItems) -> Vec<f32> {
        let Net::Neumf {
            user: fields,
            g,
            m,
            mlp,
            predict,
            ..
        } = &self.net
        else {
            panic!("neumf_rank on a model that is not NeuMF");
        };
        self.check(params, user);
        assert!(user.size >= 1, "neumf_rank needs a user row");
        let (g, m) = (*g, *m);
        let d = g + m;
        let n = items.n;
        let w1 = m + self.dense;
        let mut u = vec![0.0; d];
        for &f in fields {
            add(&mut u, &user.emb[f * d..(f + 1) * d]);
        }
        let mlp_in = m + w1;
        // (b + u·W_uᵀ) once, then + each item's share, as `forward_split` sums them
        let first = mlp.first().filter(|_| mlp_in > 0);
        let a = first.map(|first| {
            let mut a = params[first.bias_range()].to_vec();
            if m > 0 {
                let uv = ndarray::ArrayView2::from_shape((1, m), &u[g..])
                    .expect("the user's MLP part is 1 × m");
                first.accumulate(params, uv, 0..m, 1.0, &mut a);
            }
            a
        });
        let hw = if mlp_in > 0 { mlp.out_width(mlp_in) } else { 0 };
        let mut cache = MlpCache::default();
        let mut tower = Vec::new();
        // the first layer's units dead for this user over every item: left out of the second
        // layer's product (see `Mlp::forward_from_live`)
        let live = match (&a, first) {
            (Some(a), Some(_)) => mlp.live_units(
                params,
                // a unit is dead when even its largest share leaves it ≤ 0 (NaN stays in)
                (0..a.len())
                    .filter(|&k| {
                        matches!(
                            (a[k] + items.cmax[k]).partial_cmp(&0.0),
                            Some(std::cmp::Ordering::Greater) | None
                        )
                    })
                    .collect(),
            ),
            _ => None,
        };
        let mut h1t = Vec::new();
        let mut zt = Vec::with_capacity(RANK_BLOCK.min(n) * (g + hw));
        let mut out = Vec::new();
        let mut logits = Vec::with_capacity(n);
        for start in (0..n).step_by(RANK_BLOCK) {
            let rows = start..(start + RANK_BLOCK).min(n);
            let len = rows.len();
            let h: &[f32] = match (&a, first, &live) {
                (Some(a), Some(_), Some(live)) => {
                    h1t.clear();
                    h1t.resize(live.live().len() * len, 0.0);
                    for (&k, h) in live.live().iter().zip(h1t.chunks_exact_mut(len)) {
                        let (col, ak) = (&items.ct[k * n + rows.start..k * n + rows.end], a[k]);
                        for (h, c) in h.iter_mut().zip(col) {
                            *h = (c + ak).max(0.0);
                        }
                    }
                    mlp.forward_from_live(params, &h1t, live, len, &mut cache);
                    cache.output()
                }
                (Some(a), Some(first), None) => {
                    let mut h0 = cache.take_first();
                    h0.clear();
                    for r in rows.clone() {
                        h0.extend((0..first.out).map(|k| items.ct[k * n + r] + a[k]));
                    }
                    mlp.forward_from_first(params, h0, len, &mut cache);
                    cache.output()
                }
                // no layers: the tower is its input, [u_mlp | i_mlp | dense]
                _ => {
                    tower.clear();
                    if mlp_in > 0 {
                        for x1 in items.x1[rows.start * w1..rows.end * w1].chunks_exact(w1) {
                            tower.extend_from_slice(&u[g..]);
                            tower.extend_from_slice(x1);
                        }
                    }
                    &tower
                }
            };
            // the prediction layer's input, unit by unit: [u ⊙ i_gmf | tower]
            zt.clear();
            for (k, &uk) in u[..g].iter().enumerate() {
                let col = &items.gmf_t[k * n + rows.start..k * n + rows.end];
                zt.extend(col.iter().map(|i| uk * i));
            }
            for j in 0..hw {
                zt.extend(h.iter().skip(j).step_by(hw));
            }
            predict.forward_cols(params, &zt, len, &mut out);
            logits.extend_from_slice(&out);
        }
        logits
    }
}

#[derive(Default)]
struct State {
    u: Vec<f32>,
    i: Vec<f32>,
    x: Vec<f32>,
    z: Vec<f32>,
    c0: MlpCache,
    c1: MlpCache,
    logits: Vec<f32>,
}

fn add(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The logistic function.
pub fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Weighted mean binary cross-entropy on logits, and its gradient per logit.
/// Stable for large |z|: `max(z,0) − z·y + ln(1 + e^−|z|)`.
pub fn bce_with_logits(z: &[f32], y: &[f32], w: Option<&[f32]>) -> (f32, Vec<f32>) {
    let total = bce_total(w, z.len());
    if total <= 0.0 {
        return (0.0, vec![0.0; z.len()]);
    }
    let (loss, dz) = bce_terms(z, y, w, total);
    ((loss / total) as f32, dz)
}

/// The weight a batch's mean loss divides by: the weights' sum, or the rows.
fn bce_total(w: Option<&[f32]>, rows: usize) -> f64 {
    match w {
        Some(w) => w.iter().map(|&x| f64::from(x)).sum(),
        None => rows as f64,
    }
}

/// [`bce_with_logits`] for some rows of a batch whose weights sum to `total`: their weighted
/// loss sum, and the mean loss's gradient for each of them.
fn bce_terms(z: &[f32], y: &[f32], w: Option<&[f32]>, total: f64) -> (f64, Vec<f32>) {
    let mut loss = 0.0f64;
    let mut dz = Vec::with_capacity(z.len());
    for (i, (&zi, &yi)) in z.iter().zip(y).enumerate() {
        let wi = w.map_or(1.0, |w| w[i]);
        let l = zi.max(0.0) - zi * yi + (-zi.abs()).exp().ln_1p();
        loss += f64::from(wi * l);
        dz.push((f64::from(wi * (sigmoid(zi) - yi)) / total) as f32);
    }
    (loss, dz)
}

/// _Adam_ over a flat buffer (dense layers), with optional decoupled weight decay (AdamW).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DenseAdam {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Stability term.
    pub eps: f32,
    /// Decoupled weight decay per step (`w -= lr·wd·w`).
    pub weight_decay: f32,
    /// Steps taken.
    pub t: u64,
    /// First moments.
    #[serde(skip)]
    pub m: Vec<f32>,
    /// Second moments.
    #[serde(skip)]
    pub v: Vec<f32>,
}

impl DenseAdam {
    /// Fresh state for `n` parameters.
    pub fn new(n: usize, lr: f32, weight_decay: f32) -> DenseAdam {
        DenseAdam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            t: 0,
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// One step.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        self.t += 1;
        let t = self.t.min(i32::MAX as u64) as i32;
        let c1 = 1.0 - self.beta1.powi(t);
        let c2 = 1.0 - self.beta2.powi(t);
        let (b1, b2, lr, eps, wd) = (self.beta1, self.beta2, self.lr, self.eps, self.weight_decay);
        for (((w, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
        {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            if wd > 0.0 {
                *w -= lr * wd * *w;
            }
            *w -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::LIVE_MAX_INPUT;

    fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut r = InitRng::new(seed);
        (0..n).map(|_| r.uniform(scale)).collect()
    }

    /// Compare analytic gradients with central differences of the loss, for every dense
    /// parameter and every embedding input value.
    fn grad_check(arch: Architecture, fields: usize, dense: usize) {
        let model = Model::new(&arch, fields, dense).unwrap();
        let n = 5;
        let params = model.init_params(3);
        let emb = rand_vec(n * fields * model.emb_dim(), 11, 0.8);
        let dns = rand_vec(n * dense, 12, 1.5);
        let labels = [1.0, 0.0, 1.0, 0.0, 0.0];
        let weights = [1.0, 2.0, 0.5, 1.0, 3.0];
        let mut grads = vec![0.0; params.len()];
        let mut de = Vec::new();
        let batch = Batch {
            size: n,
            emb: &emb,
            dense: &dns,
        };
        let mut heard: Vec<(Range<usize>, Vec<f32>)> = Vec::new();
        model.loss_and_grads_hooked(
            &params,
            &batch,
            &labels,
            Some(&weights),
            &mut grads,
            &mut de,
            &mut |r, g| heard.push((r, g.to_vec())),
        );
        // The hook hears every layer once, in the announced order, with its final gradient.
        let order: Vec<Range<usize>> = heard.iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(order, model.backward_order());
        let mut covered = vec![0u8; params.len()];
        for (r, g) in &heard {
            assert_eq!(
                &grads[r.clone()],
                &g[..],
                "gradient of {r:?} changed after the hook"
            );
            covered[r.clone()].iter_mut().for_each(|c| *c += 1);
        }
        assert!(covered.iter().all(|&c| c == 1), "ranges cover {covered:?}");
        let loss_at = |p: &[f32], e: &[f32]| -> f64 {
            let b = Batch {
                size: n,
                emb: e,
                dense: &dns,
            };
            let z = model.forward(p, &b);
            f64::from(bce_with_logits(&z, &labels, Some(&weights)).0)
        };
        let h = 1e-2f32;
        let center = loss_at(&params, &emb);
        let mut checked = 0;
        let mut kinks = 0;
        // ReLU kinks: where the one-sided slopes disagree the loss is not smooth within ±h,
        // and a central difference means nothing; count those and check everything else.
        let mut compare = |up: f64, down: f64, ana: f32, what: String| {
            let (fwd, bwd) = ((up - center) / f64::from(h), (center - down) / f64::from(h));
            if (fwd - bwd).abs() > 0.05 * (fwd.abs() + bwd.abs()) + 1e-3 {
                kinks += 1;
                return;
            }
            checked += 1;
            let num = (up - down) / (2.0 * f64::from(h));
            let ana = f64::from(ana);
            assert!(
                (num - ana).abs() <= 1e-3 + 2e-2 * ana.abs(),
                "{what}: finite difference {num} vs analytic {ana}"
            );
        };
        for spec in model.layout().specs() {
            for j in spec.offset..spec.offset + spec.len() {
                let mut p = params.clone();
                p[j] += h;
                let up = loss_at(&p, &emb);
                p[j] -= 2.0 * h;
                let down = loss_at(&p, &emb);
                compare(
                    up,
                    down,
                    grads[j],
                    format!("{}[{}]", spec.name, j - spec.offset),
                );
            }
        }
        for j in 0..emb.len() {
            let mut e = emb.clone();
            e[j] += h;
            let up = loss_at(&params, &e);
            e[j] -= 2.0 * h;
            let down = loss_at(&params, &e);
            compare(up, down, de[j], format!("emb[{j}]"));
        }
        assert!(
            kinks * 4 <= checked,
            "{kinks} non-smooth coordinates vs {checked} checked"
        );
    }

    #[test]
    fn neumf_gradients_match_finite_differences() {
        grad_check(
            Architecture::Neumf {
                user: vec![0, 2],
                item: vec![1],
                gmf_dim: 3,
                mlp_dim: 4,
                layers: vec![6, 3],
            },
            3,
            2,
        );
    }

    #[test]
    fn row_blocks_on_threads_equal_one_pass_up_to_rounding_and_repeat_exactly() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let archs = [
            (
                Architecture::Neumf {
                    user: vec![0, 2],
                    item: vec![1],
                    gmf_dim: 3,
                    mlp_dim: 4,
                    layers: vec![6, 3],
                },
                3,
                2,
            ),
            (
                Architecture::Dlrm {
                    emb_dim: 3,
                    bottom: vec![5],
                    top: vec![6, 4],
                    interaction: Interaction::Dot,
                },
                3,
                4,
            ),
        ];
        for (arch, fields, dense) in archs {
            let model = Model::new(&arch, fields, dense).unwrap();
            let params = model.init_params(5);
            // 103 rows: blocks of 35, 35 and 33 (and 26, 26, 26, 25 for four).
            let n = 103;
            let emb = rand_vec(n * fields * model.emb_dim(), 1, 0.5);
            let dv = rand_vec(n * dense, 2, 1.0);
            let labels: Vec<f32> = (0..n).map(|i| (i % 3 == 0) as u8 as f32).collect();
            let w: Vec<f32> = (0..n).map(|i| 0.5 + (i % 4) as f32).collect();
            let b = Batch {
                size: n,
                emb: &emb,
                dense: &dv,
            };
            for weights in [None, Some(&w[..])] {
                let mut g1 = vec![0.0; params.len()];
                let mut e1 = Vec::new();
                let l1 = model.loss_and_grads(&params, &b, &labels, weights, &mut g1, &mut e1);
                for parts in [2, 3, 4] {
                    let run = || {
                        let (mut g, mut e) = (vec![0.0; params.len()], Vec::new());
                        let l = pool.install(|| {
                            model.loss_and_grads_parts(
                                parts, &params, &b, &labels, weights, &mut g, &mut e,
                            )
                        });
                        (l, g, e)
                    };
                    let (l, g, e) = run();
                    assert!((l - l1).abs() <= 1e-6 * l1.abs(), "{parts}: {l} vs {l1}");
                    for (a, b) in g.iter().zip(&g1) {
                        assert!(
                            (a - b).abs() <= 1e-6 + 1e-5 * b.abs(),
                            "{parts}: {a} vs {b}"
                        );
                    }
                    // Each row's embedding gradient is computed by one block alone: exact.
                    assert_eq!(e, e1);
                    let (l2, g2, e2) = run();
                    assert_eq!((l.to_bits(), &g2, &e2), (l2.to_bits(), &g, &e));
                }
                // Too few rows for two blocks of ROWS_PER_PART: one pass, the same bits.
                let small = Batch {
                    size: 20,
                    emb: &emb[..20 * fields * model.emb_dim()],
                    dense: &dv[..20 * dense],
                };
                let (mut ga, mut ea) = (vec![0.0; params.len()], Vec::new());
                let (mut gb, mut eb) = (vec![0.0; params.len()], Vec::new());
                let wa = weights.map(|w| &w[..20]);
                let la = model.loss_and_grads(&params, &small, &labels[..20], wa, &mut ga, &mut ea);
                let lb = model.loss_and_grads_parts(
                    4,
                    &params,
                    &small,
                    &labels[..20],
                    wa,
                    &mut gb,
                    &mut eb,
                );
                assert_eq!((la.to_bits(), ga, ea), (lb.to_bits(), gb, eb));
            }
        }
    }

    #[test]
    fn multiply_adds_per_row_by_hand() {
        // MLP 8→6→3 (48 + 18) and the prediction layer over GMF 3 + MLP 3 (6).
        let m = Model::new(
            &Architecture::Neumf {
                user: vec![0],
                item: vec![1],
                gmf_dim: 3,
                mlp_dim: 4,
                layers: vec![6, 3],
            },
            2,
            0,
        )
        .unwrap();
        assert_eq!(m.multiply_adds_per_row(), 8 * 6 + 6 * 3 + 6);
    }

    #[test]
    fn gmf_only_and_mlp_only_neumf_gradients() {
        for (g, m, layers) in [(4, 0, vec![]), (0, 3, vec![5])] {
            grad_check(
                Architecture::Neumf {
                    user: vec![0],
                    item: vec![1],
                    gmf_dim: g,
                    mlp_dim: m,
                    layers,
                },
                2,
                0,
            );
        }
    }

    #[test]
    fn dlrm_gradients_match_finite_differences() {
        for interaction in [Interaction::Dot, Interaction::Cat] {
            grad_check(
                Architecture::Dlrm {
                    emb_dim: 3,
                    bottom: vec![5],
                    top: vec![6, 4],
                    interaction,
                },
                3,
                4,
            );
            // no dense features: no bottom MLP
            grad_check(
                Architecture::Dlrm {
                    emb_dim: 3,
                    bottom: vec![],
                    top: vec![4],
                    interaction,
                },
                3,
                0,
            );
        }
    }

    #[test]
    fn bce_by_hand() {
        // z = 0: loss ln 2 whatever the label; gradient (0.5 - y)/n
        let (l, d) = bce_with_logits(&[0.0, 0.0], &[1.0, 0.0], None);
        assert!((l - std::f32::consts::LN_2).abs() < 1e-6);
        assert_eq!(d, vec![-0.25, 0.25]);
        // z = 2, y = 1: ln(1 + e^-2) = 0.126928
        let (l, _) = bce_with_logits(&[2.0], &[1.0], None);
        assert!((l - 0.126_928).abs() < 1e-5);
        // weights: mean over total weight
        let (l, d) = bce_with_logits(&[0.0, 100.0], &[1.0, 1.0], Some(&[3.0, 1.0]));
        assert!((l - 3.0 * std::f32::consts::LN_2 / 4.0).abs() < 1e-6);
        assert!((d[0] + 0.375).abs() < 1e-7);
        // extreme logits stay finite
        let (l, d) = bce_with_logits(&[-1000.0, 1000.0], &[1.0, 0.0], None);
        assert!((l - 1000.0).abs() < 1e-3 && d.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn linear_forward_by_hand() {
        let mut layout = ParamLayout::default();
        let lin = Linear::new(&mut layout, "l", 2, 2);
        // weight [[1,2],[3,4]], bias [0.5,-1]
        let p = vec![1.0, 2.0, 3.0, 4.0, 0.5, -1.0];
        let mut y = Vec::new();
        lin.forward(&p, &[1.0, 1.0, 2.0, 0.0], 2, &mut y);
        assert_eq!(y, vec![3.5, 6.0, 2.5, 5.0]);
        assert_eq!(layout.specs()[0].shape, vec![2, 2]);
        assert_eq!(layout.specs()[1].name, "l.bias");
    }

    /// A one-output layer (a prediction head) sums each row's products in input order from
    /// +0, unfused, then adds the bias: bit for bit that loop by hand, row-major or given
    /// column by column, over batches around its transposition block; within 1e-6 of f64.
    #[test]
    fn one_output_layer_sums_each_row_in_order() {
        for inp in [0usize, 1, 7, 48] {
            let mut layout = ParamLayout::default();
            let lin = Linear::new(&mut layout, "head", inp, 1);
            let p = rand_vec(layout.total(), 31, 0.8);
            for batch in [0usize, 1, 5, 127, 128, 129, 300] {
                let x = rand_vec(batch * inp, 32, 1.3);
                let mut want = Vec::new();
                for r in 0..batch {
                    let mut acc = 0.0f32;
                    for k in 0..inp {
                        acc += x[r * inp + k] * p[k];
                    }
                    want.push(p[inp] + acc);
                    let exact: f64 = f64::from(p[inp])
                        + (0..inp)
                            .map(|k| f64::from(x[r * inp + k]) * f64::from(p[k]))
                            .sum::<f64>();
                    assert!((f64::from(want[r]) - exact).abs() < 1e-6 * (1.0 + exact.abs()));
                }
                let mut y = Vec::new();
                lin.forward(&p, &x, batch, &mut y);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&y), bits(&want), "inp {inp}, batch {batch}");
                let xt: Vec<f32> = (0..inp)
                    .flat_map(|k| (0..batch).map(move |r| (r, k)))
                    .map(|(r, k)| x[r * inp + k])
                    .collect();
                lin.forward_cols(&p, &xt, batch, &mut y);
                assert_eq!(bits(&y), bits(&want), "inp {inp}, batch {batch}, by column");
            }
        }
    }

    /// An MLP finished from the first layer's live units gives the full pass's bits: wide and
    /// one-output second layers, layers after it, units dead in every row or only in some;
    /// refused where leaving units out could change a result.
    #[test]
    fn live_units_leave_the_mlp_output_bit_for_bit() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let rows = 300;
        for widths in [vec![16, 8, 4], vec![16, 1], vec![16, 1, 3], vec![16, 24]] {
            let mut layout = ParamLayout::default();
            let mlp = Mlp::new(&mut layout, "m", 12, &widths, true);
            let mut p = rand_vec(layout.total(), 41, 0.8);
            // units 1, 4, 5 and 11 dead in every row, the others live in some
            let dead = [1usize, 4, 5, 11];
            let mut h0 = rand_vec(rows * 16, 42, 1.0);
            for (i, v) in h0.iter_mut().enumerate() {
                if dead.contains(&(i % 16)) {
                    *v = -v.abs() - 0.1;
                }
            }
            let mut full = MlpCache::default();
            mlp.forward_from_first(&p, h0.clone(), rows, &mut full);
            let live: Vec<usize> = (0..16).filter(|k| !dead.contains(k)).collect();
            let h1t: Vec<f32> = live
                .iter()
                .flat_map(|&k| (0..rows).map(move |r| (r, k)))
                .map(|(r, k)| h0[r * 16 + k].max(0.0))
                .collect();
            let units = mlp.live_units(&p, live.clone()).unwrap();
            let mut got = MlpCache::default();
            mlp.forward_from_live(&p, &h1t, &units, rows, &mut got);
            assert_eq!(bits(got.output()), bits(full.output()), "{widths:?}");
            // a weight that is not finite: 0·∞ is NaN, so no unit may be left out
            let w1 = layout
                .specs()
                .iter()
                .find(|s| s.name == "m.1.weight")
                .unwrap();
            p[w1.offset] = f32::INFINITY;
            assert!(mlp.live_units(&p, live).is_none());
        }
        let mut layout = ParamLayout::default();
        let wide = Mlp::new(&mut layout, "w", 4, &[LIVE_MAX_INPUT + 1, 2], true);
        let p = rand_vec(layout.total(), 43, 0.8);
        assert!(wide.live_units(&p, vec![0, 1]).is_none());
        let mut layout = ParamLayout::default();
        let one = Mlp::new(&mut layout, "o", 4, &[6], true);
        assert!(
            one.live_units(&rand_vec(layout.total(), 44, 0.8), vec![0])
                .is_none()
        );
    }

    #[test]
    fn adam_first_step_moves_by_lr() {
        let mut opt = DenseAdam::new(2, 0.1, 0.0);
        let mut w = vec![1.0, -1.0];
        opt.step(&mut w, &[3.0, -0.5]);
        // bias-corrected first step is lr·sign(g)
        assert!((w[0] - 0.9).abs() < 1e-6 && (w[1] + 0.9).abs() < 1e-6);
    }

    /// Ranking many items for one user computes the user's side once and leaves the first
    /// layer's dead units out of the second layer; the logits must be bit for bit those of
    /// `forward` on the rows (user, item) — whatever the number of items (matrix-kernel tiles
    /// and edges, rank blocks), with dense features and without, GMF only or MLP only, with
    /// no, some and every unit dead, a second layer too wide to compact, and a weight that is
    /// not finite.
    #[test]
    fn neumf_rank_equals_forward_bit_for_bit() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (gmf_dim, mlp_dim, layers, dense, tweak) in [
            (32, 32, vec![64, 32, 16], 0, ""),
            (32, 32, vec![64, 32, 16], 0, "dead"),
            (32, 32, vec![64, 32, 16], 0, "all dead"),
            (32, 32, vec![64, 32, 16], 0, "inf"),
            (4, 4, vec![8], 2, ""),
            (8, 0, vec![], 0, ""),
            (0, 8, vec![16, 4], 0, "dead"),
            (3, 5, vec![7], 3, ""),
            (2, 0, vec![6], 2, ""),
            (0, 2, vec![6, 3], 2, "dead"),
            (4, 4, vec![300, 5], 0, "dead"),
            (4, 4, vec![8, 1], 0, "dead"),
            (4, 4, vec![8, 1], 0, ""),
            (4, 4, vec![8, 1, 3], 1, "dead"),
        ] {
            let arch = Architecture::Neumf {
                user: vec![0, 2],
                item: vec![1],
                gmf_dim,
                mlp_dim,
                layers: layers.clone(),
            };
            let fields = 3;
            let model = Model::new(&arch, fields, dense).unwrap();
            let mut params = model.init_params(5);
            let spec = |name: &str| {
                let s = model.layout().specs().iter().find(|s| s.name == name);
                let s = s.unwrap();
                s.offset..s.offset + s.shape.iter().product::<usize>()
            };
            match tweak {
                // every other unit of the first layer never fires
                "dead" => {
                    for (k, b) in params[spec("mlp.0.bias")].iter_mut().enumerate() {
                        if k % 2 == 0 {
                            *b = -1e3;
                        }
                    }
                }
                "all dead" => params[spec("mlp.0.bias")].fill(-1e3),
                "inf" => params[spec("mlp.1.weight")][3] = f32::INFINITY,
                _ => {}
            }
            let d = model.emb_dim();
            for n in [1usize, 2, 7, 33, 130, 2 * RANK_BLOCK + 37] {
                let user_emb = rand_vec(fields * d, 21, 0.7);
                let item_emb = rand_vec(n * fields * d, 22, 0.7);
                let dns = rand_vec(n * dense, 23, 1.5);
                // rows: the user's fields 0 and 2 from `user_emb`, field 1 from the item
                let mut emb = Vec::with_capacity(n * fields * d);
                for r in 0..n {
                    let it = &item_emb[r * fields * d..(r + 1) * fields * d];
                    emb.extend_from_slice(&user_emb[..d]);
                    emb.extend_from_slice(&it[d..2 * d]);
                    emb.extend_from_slice(&user_emb[2 * d..]);
                }
                let rows = Batch {
                    size: n,
                    emb: &emb,
                    dense: &dns,
                };
                let want = model.forward(&params, &rows);
                let items = model.neumf_items(&params, &rows).unwrap();
                assert_eq!(items.len(), n);
                let user = Batch {
                    size: 1,
                    emb: &emb[..fields * d],
                    dense: &dns[..dense],
                };
                let got = model.neumf_rank(&params, &user, &items);
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "gmf {gmf_dim} mlp {mlp_dim} layers {layers:?} dense {dense} {tweak}, {n} items"
                );
            }
        }
        let dlrm = Model::new(
            &Architecture::Dlrm {
                emb_dim: 4,
                bottom: vec![],
                top: vec![4],
                interaction: Interaction::Dot,
            },
            2,
            0,
        )
        .unwrap();
        let p = dlrm.init_params(1);
        let e = vec![0.0; 8];
        let b = Batch {
            size: 1,
            emb: &e,
            dense: &[],
        };
        assert!(dlrm.neumf_items(&p, &b).is_none());
    }

    #[test]
    fn bad_architectures_are_refused() {
        let a = Architecture::Neumf {
            user: vec![0],
            item: vec![3],
            gmf_dim: 4,
            mlp_dim: 4,
            layers: vec![8],
        };
        assert!(Model::new(&a, 2, 0).unwrap_err().0.contains("out of range"));
        let d = Architecture::Dlrm {
            emb_dim: 4,
            bottom: vec![],
            top: vec![],
            interaction: Interaction::Dot,
        };
        assert!(Model::new(&d, 1, 0).is_err());
    }
}
