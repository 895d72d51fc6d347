//! Dense layers with hand-written backward passes over flat parameter buffers.
//!
//! Every parameter of a model lives in one `Vec<f32>` described by a [`ParamLayout`]
//! (name, shape, offset), and gradients in a buffer of the same layout. That makes the dense
//! optimiser one loop, the data-parallel all-reduce one call over one slice, and checkpoints a
//! list of named tensors (PyTorch's layout: a linear weight is `[out, in]`).

use std::ops::Range;

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, Axis, Slice};

/// One named tensor inside a flat parameter buffer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParamSpec {
    /// Name, e.g. `mlp.0.weight`.
    pub name: String,
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// First element in the flat buffer.
    pub offset: usize,
}

impl ParamSpec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a tensor with no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where every tensor of a model sits in its flat buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamLayout {
    specs: Vec<ParamSpec>,
    total: usize,
}

impl ParamLayout {
    /// Reserve a tensor; returns its offset.
    pub fn add(&mut self, name: impl Into<String>, shape: &[usize]) -> usize {
        let offset = self.total;
        let spec = ParamSpec {
            name: name.into(),
            shape: shape.to_vec(),
            offset,
        };
        self.total += spec.len();
        self.specs.push(spec);
        offset
    }

    /// The tensors, in buffer order.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// Total number of parameters.
    pub fn total(&self) -> usize {
        self.total
    }
}

/// Deterministic uniform draws for initialisation (SplitMix64).
#[derive(Debug, Clone)]
pub struct InitRng(u64);

impl InitRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> InitRng {
        InitRng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    /// Uniform in `[-scale, scale)`.
    pub fn uniform(&mut self, scale: f32) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let unit = (z >> 40) as f32 / (1u64 << 24) as f32;
        (unit * 2.0 - 1.0) * scale
    }
}

/// `c = alpha · op(a) · op(b) + beta · c` on row-major slices; `op` transposes when asked.
/// `a` is stored `[ar, ac]`, `b` is stored `[br, bc]`, `c` is `[m, n]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    a: &[f32],
    (ar, ac): (usize, usize),
    trans_a: bool,
    b: &[f32],
    (br, bc): (usize, usize),
    trans_b: bool,
    c: &mut [f32],
    beta: f32,
) {
    let a = ArrayView2::from_shape((ar, ac), a).expect("gemm: a has the stated shape");
    let b = ArrayView2::from_shape((br, bc), b).expect("gemm: b has the stated shape");
    let a = if trans_a { a.t() } else { a };
    let b = if trans_b { b.t() } else { b };
    let (m, n) = (a.nrows(), b.ncols());
    let mut c = ArrayViewMut2::from_shape((m, n), c).expect("gemm: c has the stated shape");
    general_mat_mul(1.0, &a, &b, beta, &mut c);
}

/// Widest layer input whose dead columns [`Mlp::forward_from_live`] leaves out: up to it the
/// matrix kernel takes each output's sum in one pass over the inputs (matrixmultiply's f32
/// depth block is 256).
pub const LIVE_MAX_INPUT: usize = 256;

/// The first layer's units left in for [`Mlp::forward_from_live`], and the second layer's
/// weights over just those (`out × live`).
#[derive(Debug, Clone)]
pub struct LiveUnits {
    live: Vec<usize>,
    w: Vec<f32>,
}

impl LiveUnits {
    /// The units left in, increasing.
    pub fn live(&self) -> &[usize] {
        &self.live
    }
}

/// `y[r] = b + Σ_k xt[k][r]·w[k]` for `batch` rows, `xt` given column by column: the
/// products added one after another in `w`'s order from +0, each operation rounded on its own
/// (see [`Linear::forward_cols`]).
fn dot_cols(w: &[f32], b: f32, xt: &[f32], batch: usize, y: &mut Vec<f32>) {
    y.clear();
    y.resize(batch, 0.0);
    for (&wk, col) in w.iter().zip(xt.chunks_exact(batch.max(1))) {
        for (acc, &x) in y.iter_mut().zip(col) {
            *acc += x * wk;
        }
    }
    for v in y.iter_mut() {
        *v += b;
    }
}

/// Rows a one-output layer's [`Linear::forward`] transposes at a time.
const DOT_BLOCK: usize = 128;

/// A fully connected layer `y = x · Wᵀ + b`, with `W` stored `[out, in]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linear {
    /// Input width.
    pub inp: usize,
    /// Output width.
    pub out: usize,
    w: usize,
    b: usize,
}

impl Linear {
    /// Reserve `name.weight` and `name.bias` in `layout`.
    pub fn new(layout: &mut ParamLayout, name: &str, inp: usize, out: usize) -> Linear {
        let w = layout.add(format!("{name}.weight"), &[out, inp]);
        let b = layout.add(format!("{name}.bias"), &[out]);
        Linear { inp, out, w, b }
    }

    /// The bias, as a range of the parameter buffer.
    pub fn bias_range(&self) -> Range<usize> {
        self.b..self.b + self.out
    }

    /// The layer's weight and bias, one contiguous range of the parameter buffer.
    pub fn range(&self) -> Range<usize> {
        self.w..self.b + self.out
    }

    /// PyTorch's default initialisation: weight and bias uniform in ±1/√in.
    pub fn init(&self, params: &mut [f32], rng: &mut InitRng) {
        let scale = 1.0 / (self.inp.max(1) as f32).sqrt();
        for v in &mut params[self.w..self.b + self.out] {
            *v = rng.uniform(scale);
        }
    }

    /// `y = x · Wᵀ + b` for `batch` rows. A layer with one output (a prediction head) takes
    /// [`Linear::forward_cols`]'s arithmetic, its input transposed in blocks.
    pub fn forward(&self, params: &[f32], x: &[f32], batch: usize, y: &mut Vec<f32>) {
        if self.out == 1 {
            y.clear();
            let (mut xt, mut part) = (Vec::new(), Vec::new());
            let mut start = 0;
            while start < batch {
                let len = DOT_BLOCK.min(batch - start);
                let rows = &x[start * self.inp..(start + len) * self.inp];
                xt.clear();
                for k in 0..self.inp {
                    xt.extend(rows.iter().skip(k).step_by(self.inp));
                }
                self.forward_cols(params, &xt, len, &mut part);
                y.extend_from_slice(&part);
                start += len;
            }
            return;
        }
        y.clear();
        let bias = &params[self.b..self.b + self.out];
        for _ in 0..batch {
            y.extend_from_slice(bias);
        }
        if batch == 0 || self.inp == 0 {
            return;
        }
        let w = &params[self.w..self.w + self.out * self.inp];
        gemm(
            x,
            (batch, self.inp),
            false,
            w,
            (self.out, self.inp),
            true,
            y,
            1.0,
        );
    }

    /// A one-output layer's `y = x · wᵀ + b` for `batch` rows given column by column (`xt`
    /// is `inp × batch`): for each row, the products `x[k]·w[k]` added one after another in
    /// input order from +0, each multiplication and addition rounded on its own (no fused
    /// multiply-add, so every CPU gives the same bits), then the bias added. Rows are SIMD
    /// lanes, so this costs one multiply-add per input per row, where a matrix kernel computes
    /// a tile of outputs to keep one.
    pub fn forward_cols(&self, params: &[f32], xt: &[f32], batch: usize, y: &mut Vec<f32>) {
        assert_eq!(self.out, 1, "forward_cols is for a layer with one output");
        assert_eq!(xt.len(), self.inp * batch, "xt holds inp × batch values");
        dot_cols(
            &params[self.w..self.w + self.inp],
            params[self.b],
            xt,
            batch,
            y,
        );
    }

    /// [`Linear::forward`] with the input's columns taken in two groups, `[..split]` first:
    /// `y = (b + x[:, ..split]·W[:, ..split]ᵀ) + x[:, split..]·W[:, split..]ᵀ`. The same
    /// function up to rounding; it exists so that rows sharing their first group (NeuMF's user
    /// side) can have that share computed once, bit for bit as here (see
    /// [`Linear::accumulate`]).
    pub fn forward_split(
        &self,
        params: &[f32],
        x: &[f32],
        batch: usize,
        split: usize,
        y: &mut Vec<f32>,
    ) {
        assert!(split <= self.inp, "split {split} beyond the input width");
        y.clear();
        let bias = &params[self.b..self.b + self.out];
        for _ in 0..batch {
            y.extend_from_slice(bias);
        }
        if batch == 0 {
            return;
        }
        let xv = ArrayView2::from_shape((batch, self.inp), x).expect("x holds batch × inp values");
        for cols in [0..split, split..self.inp] {
            if !cols.is_empty() {
                let part = xv.slice_axis(Axis(1), Slice::from(cols.clone()));
                self.accumulate(params, part, cols, 1.0, y);
            }
        }
    }

    /// `y = beta·y + x·W[:, cols]ᵀ`: the share of the input columns `cols` in the output, for
    /// `x` holding just those columns (`[rows, cols.len()]`). Each output is one sum over the
    /// columns in order, whatever the number of rows, so a share computed for one row equals
    /// the same row's share computed in a batch.
    pub fn accumulate(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        cols: Range<usize>,
        beta: f32,
        y: &mut [f32],
    ) {
        let w = ArrayView2::from_shape(
            (self.out, self.inp),
            &params[self.w..self.w + self.out * self.inp],
        )
        .expect("the weight has the layer's shape");
        let w = w.slice_axis(Axis(1), Slice::from(cols));
        let mut c =
            ArrayViewMut2::from_shape((x.nrows(), self.out), y).expect("y holds rows × out values");
        general_mat_mul(1.0, &x, &w.t(), beta, &mut c);
    }

    /// Accumulate `dW += dyᵀ·x`, `db += Σ dy` into `grads`; write `dx = dy·W` when asked.
    pub fn backward(
        &self,
        params: &[f32],
        x: &[f32],
        dy: &[f32],
        batch: usize,
        grads: &mut [f32],
        dx: Option<&mut Vec<f32>>,
    ) {
        {
            let db = &mut grads[self.b..self.b + self.out];
            for row in dy.chunks_exact(self.out) {
                for (g, d) in db.iter_mut().zip(row) {
                    *g += d;
                }
            }
        }
        if batch > 0 && self.inp > 0 {
            let dw = &mut grads[self.w..self.w + self.out * self.inp];
            gemm(
                dy,
                (batch, self.out),
                true,
                x,
                (batch, self.inp),
                false,
                dw,
                1.0,
            );
        }
        if let Some(dx) = dx {
            dx.clear();
            dx.resize(batch * self.inp, 0.0);
            if batch > 0 && self.inp > 0 {
                let w = &params[self.w..self.w + self.out * self.inp];
                gemm(
                    dy,
                    (batch, self.out),
                    false,
                    w,
                    (self.out, self.inp),
                    false,
                    dx,
                    0.0,
                );
            }
        }
    }
}

/// A stack of [`Linear`] layers with ReLU between them (and after the last one when
/// `relu_last`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mlp {
    layers: Vec<Linear>,
    relu_last: bool,
}

/// Activations an [`Mlp`] keeps for its backward pass.
#[derive(Debug, Default, Clone)]
pub struct MlpCache {
    outs: Vec<Vec<f32>>,
}

impl MlpCache {
    /// The network's output from the last forward pass.
    pub fn output(&self) -> &[f32] {
        self.outs.last().map(Vec::as_slice).unwrap_or(&[])
    }

    /// The first layer's output buffer, taken out to be refilled (its allocation reused).
    pub fn take_first(&mut self) -> Vec<f32> {
        self.outs
            .first_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

impl Mlp {
    /// Layers `inp → widths[0] → … → widths[n-1]`, named `name.0`, `name.1`, ….
    pub fn new(
        layout: &mut ParamLayout,
        name: &str,
        inp: usize,
        widths: &[usize],
        relu_last: bool,
    ) -> Mlp {
        let mut layers = Vec::new();
        let mut prev = inp;
        for (i, &w) in widths.iter().enumerate() {
            layers.push(Linear::new(layout, &format!("{name}.{i}"), prev, w));
            prev = w;
        }
        Mlp { layers, relu_last }
    }

    /// Output width (the input width when there are no layers).
    pub fn out_width(&self, inp: usize) -> usize {
        self.layers.last().map_or(inp, |l| l.out)
    }

    /// True when the stack has no layers (identity).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Initialise every layer.
    pub fn init(&self, params: &mut [f32], rng: &mut InitRng) {
        for l in &self.layers {
            l.init(params, rng);
        }
    }

    fn relu_after(&self, i: usize) -> bool {
        i + 1 < self.layers.len() || self.relu_last
    }

    /// Forward `batch` rows of `x`; the output is `cache.output()`.
    pub fn forward(&self, params: &[f32], x: &[f32], batch: usize, cache: &mut MlpCache) {
        cache.outs.resize_with(self.layers.len(), Vec::new);
        for i in 0..self.layers.len() {
            let (before, rest) = cache.outs.split_at_mut(i);
            let input = if i == 0 { x } else { &before[i - 1] };
            let out = &mut rest[0];
            self.layers[i].forward(params, input, batch, out);
            if self.relu_after(i) {
                for v in out.iter_mut() {
                    *v = v.max(0.0);
                }
            }
        }
    }

    /// [`Mlp::forward`] with the first layer computed by [`Linear::forward_split`] at `split`.
    pub fn forward_split(
        &self,
        params: &[f32],
        x: &[f32],
        batch: usize,
        split: usize,
        cache: &mut MlpCache,
    ) {
        let Some(first) = self.layers.first() else {
            return self.forward(params, x, batch, cache);
        };
        let mut h0 = cache.take_first();
        first.forward_split(params, x, batch, split, &mut h0);
        self.forward_from_first(params, h0, batch, cache);
    }

    /// The first layer, if any.
    pub fn first(&self) -> Option<&Linear> {
        self.layers.first()
    }

    /// Finish a forward pass of `batch` rows from the first layer's output `h0` (before its
    /// ReLU); the output is `cache.output()`. The MLP must have a layer.
    pub fn forward_from_first(
        &self,
        params: &[f32],
        h0: Vec<f32>,
        batch: usize,
        cache: &mut MlpCache,
    ) {
        assert!(
            !self.layers.is_empty(),
            "an MLP without layers has no first layer"
        );
        cache.outs.resize_with(self.layers.len(), Vec::new);
        cache.outs[0] = h0;
        if self.relu_after(0) {
            for v in cache.outs[0].iter_mut() {
                *v = v.max(0.0);
            }
        }
        for i in 1..self.layers.len() {
            let (before, rest) = cache.outs.split_at_mut(i);
            let out = &mut rest[0];
            self.layers[i].forward(params, &before[i - 1], batch, out);
            if self.relu_after(i) {
                for v in out.iter_mut() {
                    *v = v.max(0.0);
                }
            }
        }
    }

    /// The second layer's weights restricted to the first layer's units `live` (increasing,
    /// the units not dead for the rows to come), for [`Mlp::forward_from_live`]; `None` when
    /// leaving units out could change a result: no second layer, an input wider than
    /// [`LIVE_MAX_INPUT`], or a weight that is not finite.
    pub fn live_units(&self, params: &[f32], live: Vec<usize>) -> Option<LiveUnits> {
        let second = self.layers.get(1)?;
        let w = &params[second.w..second.w + second.out * second.inp];
        if second.inp > LIVE_MAX_INPUT
            || !w.iter().all(|v| v.is_finite())
            || live.iter().any(|&k| k >= second.inp)
        {
            return None;
        }
        let mut lw = Vec::with_capacity(second.out * live.len());
        for row in w.chunks_exact(second.inp) {
            lw.extend(live.iter().map(|&k| row[k]));
        }
        Some(LiveUnits { live, w: lw })
    }

    /// [`Mlp::forward_from_first`] for `batch` rows whose first layer's output after its ReLU
    /// is zero in every unit but `units.live`: `h1t` holds those units' values, unit after
    /// unit (`live.len() × batch`). Bit for bit the full pass (the output is
    /// `cache.output()`): the second layer sums each output's products one after another from
    /// +0, and a zero input's product with a finite weight is ±0, which leaves that sum as it
    /// was — so the dead units are left out of the product, not out of the result.
    pub fn forward_from_live(
        &self,
        params: &[f32],
        h1t: &[f32],
        units: &LiveUnits,
        batch: usize,
        cache: &mut MlpCache,
    ) {
        let second = &self.layers[1];
        let l = units.live.len();
        assert_eq!(l * batch, h1t.len(), "h1t holds the live units' values");
        cache.outs.resize_with(self.layers.len(), Vec::new);
        let y = &mut cache.outs[1];
        if second.out == 1 {
            // a one-output layer's own arithmetic (`Linear::forward_cols`): a sum in input
            // order, unfused, which a zero input's ±0 product leaves as it was too
            dot_cols(&units.w, params[second.b], h1t, batch, y);
        } else {
            y.clear();
            let bias = &params[second.b..second.b + second.out];
            for _ in 0..batch {
                y.extend_from_slice(bias);
            }
            if batch > 0 && l > 0 {
                gemm(
                    h1t,
                    (l, batch),
                    true,
                    &units.w,
                    (second.out, l),
                    true,
                    y,
                    1.0,
                );
            } else {
                // the kernel adds its sum, here empty (+0), to the bias
                for v in y.iter_mut() {
                    *v += 0.0;
                }
            }
        }
        for i in 1..self.layers.len() {
            if i > 1 {
                let (before, rest) = cache.outs.split_at_mut(i);
                self.layers[i].forward(params, &before[i - 1], batch, &mut rest[0]);
            }
            if self.relu_after(i) {
                for v in cache.outs[i].iter_mut() {
                    *v = v.max(0.0);
                }
            }
        }
    }

    /// The layers' parameter ranges in the order [`Mlp::backward`] finishes them (top first).
    pub fn backward_order(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.layers.iter().rev().map(Linear::range)
    }

    /// Backward from `dy` (gradient of the output); accumulates into `grads` and writes the
    /// input gradient into `dx` when asked. Needs the cache of the matching forward. `ready`
    /// hears each layer's range (top layer first) as soon as its gradient is final.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        params: &[f32],
        x: &[f32],
        batch: usize,
        cache: &MlpCache,
        dy: &[f32],
        grads: &mut [f32],
        dx: Option<&mut Vec<f32>>,
        ready: &mut dyn FnMut(Range<usize>, &[f32]),
    ) {
        if self.layers.is_empty() {
            if let Some(dx) = dx {
                dx.clear();
                dx.extend_from_slice(dy);
            }
            return;
        }
        let mut d = dy.to_vec();
        let mut next = Vec::new();
        let mut dx = dx;
        for i in (0..self.layers.len()).rev() {
            if self.relu_after(i) {
                for (g, o) in d.iter_mut().zip(&cache.outs[i]) {
                    if *o <= 0.0 {
                        *g = 0.0;
                    }
                }
            }
            let input = if i == 0 { x } else { &cache.outs[i - 1] };
            if i == 0 {
                self.layers[0].backward(params, input, &d, batch, grads, dx.take());
            } else {
                self.layers[i].backward(params, input, &d, batch, grads, Some(&mut next));
                std::mem::swap(&mut d, &mut next);
            }
            let r = self.layers[i].range();
            ready(r.clone(), &grads[r]);
        }
    }
}
