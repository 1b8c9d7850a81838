using System.Runtime.Intrinsics;
using Spdf.Sparsity.Kernels;
using Spdf.Sparsity.Masks;
using Spdf.Tensors;
using Spdf.Tensors.Nn;
using Spdf.Tensors.Kernels.Cpu;

namespace Spdf.Sparsity.Tests;

/// <summary>The compressed kernels must match the masked-dense reference (forward, input, weight and bias gradients).</summary>
public class CompressedKernelTests
{
    private static (float[] Y, float[] Dx, float[] Dw, float[]? Db) Run(SparseLinear layer, Tensor x, Tensor dy)
    {
        x.Grad = null; layer.ZeroGrad();
        var y = layer.Forward(x);
        y.Backward(dy);
        return (y.ToArray(), x.Grad!.ToArray(), layer.Weight.Grad!.ToArray(), layer.Bias?.Grad?.ToArray());
    }

    private static void Same(float[] actual, float[] expected, string what, float tol = 2e-4f)
    {
        actual.Length.Should().Be(expected.Length);
        for (int i = 0; i < actual.Length; i++)
            actual[i].Should().BeApproximately(expected[i], tol * (1 + Math.Abs(expected[i])), $"{what}[{i}]");
    }

    private static void Compare(int tokens, int inF, int outF, SparsityMask? mask, double sparsity, bool bias, ulong seed)
    {
        var g = new Generator(seed);
        var dense = new Linear(inF, outF, bias, g);
        mask ??= MaskInitializers.Random.Create(dense.Weight, sparsity, new SparsityRandom(g.NextUInt64()));
        var layer = SparseLinear.FromLinear(dense, mask);
        var x = Tensor.Randn(new Shape(tokens, inF), g); x.RequiresGrad = true;
        var dy = Tensor.Randn(new Shape(tokens, outF), g);
        layer.KernelMode = SparseKernelMode.MaskedDense;
        var reference = Run(layer, x, dy);
        layer.KernelMode = SparseKernelMode.Compressed;
        var compressed = Run(layer, x, dy);
        layer.Kernel.Should().Be("csr");
        Same(compressed.Y, reference.Y, "y");
        Same(compressed.Dx, reference.Dx, "dx");
        Same(compressed.Dw, reference.Dw, "dw");
        for (int i = 0; i < compressed.Dw.Length; i++) if (!mask.IsKept(i)) compressed.Dw[i].Should().Be(0f);
        if (bias) Same(compressed.Db!, reference.Db!, "db");
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.5)]
    [InlineData(0.75)]
    [InlineData(0.9)]
    [InlineData(0.99)]
    public void MatchesMaskedDenseAcrossSparsities(double s) => Compare(130, 96, 80, null, s, true, 1);

    [Theory]
    [InlineData(1, 17, 9)]     // one token: the SpMV decode path
    [InlineData(7, 33, 5)]
    [InlineData(64, 64, 64)]
    [InlineData(65, 7, 130)]
    public void MatchesMaskedDenseForOddShapes(int tokens, int inF, int outF) => Compare(tokens, inF, outF, null, 0.6, tokens % 2 == 1, 2);

    [Theory] // several token blocks (partial last block and panel)
    [InlineData(300, 300, 70, 0.75)]
    [InlineData(520, 45, 33, 0.5)]
    [InlineData(256, 129, 20, 0.95)]
    public void MatchesMaskedDenseForLongSequences(int tokens, int inF, int outF, double sparsity) => Compare(tokens, inF, outF, null, sparsity, true, 11);

    [Fact]
    public void WeightGradientWithoutAnInputGradient()
    {
        // The input needs no gradient: dYᵀ's blocks are not filled by the input-gradient SpMM on the way, but on their own.
        var g = new Generator(17);
        var dense = new Linear(150, 140, true, g);
        var layer = SparseLinear.FromLinear(dense, MaskInitializers.Random.Create(dense.Weight, 0.7, new SparsityRandom(g.NextUInt64())));
        var x = Tensor.Randn(new Shape(70, 150), g);
        var dy = Tensor.Randn(new Shape(70, 140), g);
        float[] Dw(SparseKernelMode mode)
        {
            layer.KernelMode = mode; layer.ZeroGrad();
            layer.Forward(x).Backward(dy);
            return layer.Weight.Grad!.ToArray();
        }
        Same(Dw(SparseKernelMode.Compressed), Dw(SparseKernelMode.MaskedDense), "dw");
    }

    [Fact]
    public void BiasGradientWithAFrozenWeight()
    {
        // The weight needs no gradient: the bias gradient is not summed inside the SDDMM, but on its own.
        var g = new Generator(18);
        var dense = new Linear(90, 70, true, g);
        var layer = SparseLinear.FromLinear(dense, MaskInitializers.Random.Create(dense.Weight, 0.7, new SparsityRandom(g.NextUInt64())));
        layer.Weight.RequiresGrad = false;
        var x = Tensor.Randn(new Shape(300, 90), g);
        var dy = Tensor.Randn(new Shape(300, 70), g);
        float[] Db(SparseKernelMode mode)
        {
            layer.KernelMode = mode; layer.ZeroGrad();
            layer.Forward(x).Backward(dy);
            layer.Weight.Grad.Should().BeNull();
            return layer.Bias!.Grad!.ToArray();
        }
        Same(Db(SparseKernelMode.Compressed), Db(SparseKernelMode.MaskedDense), "db");
    }

    [Fact]
    public void ManyPanels() => Compare(129, 300, 270, null, 0.8, true, 9); // 3 panels each way, partial last panel

    [Fact]
    public void AllButOneWeightDropped()
    {
        int n = 24 * 40;
        Compare(70, 40, 24, null, 1 - 1.0 / n, true, 3);
    }

    [Fact]
    public void EveryWeightDropped() => Compare(67, 20, 12, new Tensor(new float[12 * 20], new Shape(12, 20)).ToMask(), 0, true, 5); // no kept weight: the bias alone

    [Fact]
    public void EmptyRowsAndColumns()
    {
        var m = new float[12 * 20];
        var g = new Generator(4);
        for (int r = 0; r < 12; r++)
            for (int c = 0; c < 20; c++)
                m[r * 20 + c] = r % 3 == 0 || c % 4 == 1 ? 0f : (g.NextFloat() < 0.5f ? 1f : 0f); // rows 0,3,6,9 and columns 1,5,… empty
        Compare(67, 20, 12, (new Tensor(m, new Shape(12, 20))).ToMask(), 0, true, 5);
    }

    [Fact]
    public void StaysCorrectAfterMaskUpdatesAndCheckpointLoads()
    {
        var g = new Generator(6);
        var layer = SparseLinear.FromLinear(new Linear(48, 40, true, g), MaskInitializers.Random.Create(Tensor.Zeros(40, 48), 0.7, new SparsityRandom(g.NextUInt64())));
        layer.KernelMode = SparseKernelMode.Compressed;
        var x = Tensor.Randn(new Shape(80, 48), g);
        layer.Forward(x); // builds the CSR
        layer.SetMask(MaskInitializers.Random.Create(layer.Weight, 0.5, new SparsityRandom(7)));
        Init.Normal(layer.Weight, 0, 1, g); layer.ApplyMask();
        var expected = ReferenceForward(layer, x);
        Same(layer.Forward(x).ToArray(), expected, "after SetMask");
        var other = SparseLinear.FromLinear(new Linear(48, 40, true, g), MaskInitializers.Random.Create(Tensor.Zeros(40, 48), 0.9, new SparsityRandom(g.NextUInt64())));
        other.KernelMode = SparseKernelMode.Compressed;
        other.Forward(x);
        other.LoadStateDict(layer.StateDict());
        Same(other.Forward(x).ToArray(), expected, "after LoadStateDict");
    }

    private static float[] ReferenceForward(SparseLinear layer, Tensor x)
    {
        var saved = layer.KernelMode;
        layer.KernelMode = SparseKernelMode.MaskedDense;
        using var _ = Tensors.Autograd.GradMode.NoGrad();
        var y = layer.Forward(x).ToArray();
        layer.KernelMode = saved;
        return y;
    }

    [Fact]
    public void AutoModePicksAKernelAndReportsIt()
    {
        var layer = SparseLinear.FromLinear(new Linear(64, 64), MaskInitializers.Random.Create(Tensor.Zeros(64, 64), 0.9, new SparsityRandom(1)));
        layer.Kernel.Should().Be("auto");
        layer.Forward(Tensor.Ones(32, 64));
        layer.Kernel.Should().BeOneOf("csr", "masked-dense");
    }

    [Fact]
    public void CsrStructureAndBytes()
    {
        var mask = (Tensor.From([1f, 0f, 1f, 0f, 0f, 0f, 0f, 1f, 1f], 3, 3)).ToMask();
        var csr = CsrMatrix.FromMask(mask, panelWidth: 3);
        csr.RowPointers.Should().Equal(0, 2, 2, 4);
        Enumerable.Range(0, csr.Nnz).Select(csr.Column).Should().Equal(0, 2, 1, 2);
        // Values, row pointers, then the padded layout: two groups (+ the lookahead's) of 16-bit columns and its group pointers.
        csr.Bytes.Should().Be(4 * 4 + 4 * 4 + (2 + PaddedPanels.Lookahead) * PaddedPanels.GroupSize * 2 + 4 * 4);
        var panels = CsrMatrix.FromMask(mask, panelWidth: 2);
        panels.Panels.Should().Be(2);
        panels.RowPointers.Should().Equal(0, 1, 1, 2, /* panel 1 */ 2, 3, 3, 4);
        Enumerable.Range(0, panels.Nnz).Select(panels.Column).Should().Equal(0, 1, 2, 2);
        panels.Bytes.Should().Be(4 * 4 + 8 * 4 + (4 + PaddedPanels.Lookahead) * PaddedPanels.GroupSize * 2 + 8 * 4);
        var t = CsrMatrix.FromMask(mask, transpose: true, panelWidth: 3);
        t.RowPointers.Should().Equal(0, 1, 2, 4);
        t.DenseIndices().Should().Equal(0, 7, 2, 8);
        var built = csr.TransposeStructure(out var map, panelWidth: 3);
        built.RowPointers.Should().Equal(t.RowPointers);
        Enumerable.Range(0, built.Nnz).Select(built.Column).Should().Equal(Enumerable.Range(0, t.Nnz).Select(t.Column));
        map.Should().Equal(0, 2, 1, 3); // csr's entries are (0,0) (0,2) (2,1) (2,2); the transpose's are W's (0,0) (2,1) (0,2) (2,2)
        built.Transposed.Should().BeTrue();
        ((Action)(() => SparseKernels.SpMV(csr, new float[2], new float[3]))).Should().Throw<ArgumentException>().WithMessage("*needs x of 3*");
    }
}

public class TransposeStructureTests
{
    [Theory]
    [InlineData(37, 150, 0.7, 16, 32)]
    [InlineData(300, 20, 0.9, 128, 7)]
    [InlineData(5, 5, 0.0, 2, 3)]
    public void MatchesTheTransposeBuiltFromTheMask(int rows, int cols, double sparsity, int panel, int panelT)
    {
        var g = new Generator(21);
        var mask = MaskInitializers.Random.Create(Tensor.Zeros(rows, cols), sparsity, new SparsityRandom(g.NextUInt64()));
        var csr = CsrMatrix.FromMask(mask, panelWidth: panel);
        var expected = CsrMatrix.FromMask(mask, transpose: true, panelWidth: panelT);
        var built = csr.TransposeStructure(out var map, panelT);
        built.RowPointers.Should().Equal(expected.RowPointers);
        built.PanelWidth.Should().Be(expected.PanelWidth);
        Enumerable.Range(0, built.Nnz).Select(built.Column).Should().Equal(Enumerable.Range(0, expected.Nnz).Select(expected.Column));
        var mine = built.DenseIndices(); var theirs = csr.DenseIndices();
        Enumerable.Range(0, map.Length).Select(e => theirs[map[e]]).Should().Equal(mine, "each transposed entry maps to the same weight");
    }
}

public class CompressedCacheTests
{
    [Fact]
    public void OptimizerStepsRefreshTheCompressedValues()
    {
        var g = new Generator(8);
        var layer = SparseLinear.FromLinear(new Linear(40, 24, true, g), MaskInitializers.Random.Create(Tensor.Zeros(24, 40), 0.75, new SparsityRandom(g.NextUInt64())));
        layer.KernelMode = SparseKernelMode.Compressed;
        var opt = new Tensors.Optim.AdamW(layer.Parameters(), 0.05);
        var x = Tensor.Randn(new Shape(70, 40), g);
        for (int step = 0; step < 3; step++)
        {
            opt.ZeroGrad();
            layer.Forward(x).Sum().Backward();
            opt.Step();
        }
        var compressed = layer.Forward(x).ToArray();
        layer.KernelMode = SparseKernelMode.MaskedDense;
        var reference = layer.Forward(x).ToArray();
        for (int i = 0; i < reference.Length; i++) compressed[i].Should().BeApproximately(reference[i], 1e-4f);
        // and a write through the indexer is seen too
        layer.KernelMode = SparseKernelMode.Compressed;
        int kept = Enumerable.Range(0, 24 * 40).First(layer.Mask.IsKept);
        layer.Weight[kept / 40, kept % 40] += 1f;
        var after = layer.Forward(x).ToArray();
        after.Should().NotEqual(compressed);
    }
}

public class AlignedBufferTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(17)]
    [InlineData(100_003)]
    public unsafe void StartsOnACacheLineAndIsReused(int length)
    {
        var a = AlignedBuffer.Rent(length);
        a.Span.Length.Should().Be(length);
        long at = Address(a);
        (at % 64).Should().Be(0);
        a.Span.Fill(1f);
        a.Dispose();
        a.Dispose(); // a second give-back does nothing
        var b = AlignedBuffer.Rent(length);
        var c = AlignedBuffer.Rent(length);
        Address(b).Should().NotBe(Address(c), "one buffer is never rented twice at once");
        (Address(b) == at || Address(c) == at).Should().BeTrue("a returned buffer of that length is reused");
        (Address(c) % 64).Should().Be(0);
        b.Dispose(); c.Dispose();
        ((Action)(() => AlignedBuffer.Rent(0))).Should().Throw<ArgumentOutOfRangeException>();
    }

    private static unsafe long Address(AlignedBuffer buffer)
    {
        fixed (float* p = buffer.Span) return (long)p;
    }

    [Fact]
    public void AStaleOwnerCannotGiveBackOrReachABufferRentedSince()
    {
        var stale = AlignedBuffer.Rent(2_345_679);
        long at = Address(stale);
        stale.Dispose();
        using var current = AlignedBuffer.Rent(2_345_679);
        Address(current).Should().Be(at, "the pool hands the block out again");
        stale.Dispose(); // the stale owner's second give-back must not return the block that `current` holds
        using var other = AlignedBuffer.Rent(2_345_679);
        Address(other).Should().NotBe(at, "the block is still rented by `current`");
        FluentActions.Invoking(() => stale.Span.Length).Should().Throw<ObjectDisposedException>().WithMessage("*given back to the pool*");
    }

    [Fact]
    public void NearbyLengthsShareABufferOfAtMostAnEighthMore()
    {
        // Every sparse layer's padded values differ in length by a little: they must not each keep a pooled buffer.
        AlignedBuffer.CapacityFor(617_392).Should().Be(AlignedBuffer.CapacityFor(617_696));
        foreach (int n in new[] { 1, 1024, 1025, 65_536, 65_537, 617_392, 1 << 20, 100_000_003 })
        {
            int cap = AlignedBuffer.CapacityFor(n);
            cap.Should().BeGreaterThanOrEqualTo(n);
            if (n > 1024) ((double)cap / n).Should().BeLessThanOrEqualTo(1.125, $"length {n}");
        }
        var a = AlignedBuffer.Rent(700_001);
        long at = Address(a);
        a.Dispose();
        using var b = AlignedBuffer.Rent(700_123);
        Address(b).Should().Be(at, "a returned buffer of the same capacity is reused for a nearby length");
        b.Span.Length.Should().Be(700_123);
    }
}

public class PaddedPanelsTests
{
    [Fact]
    public void PadsEachPanelRowToWholeGroupsWithPanelRelativeColumns()
    {
        // Row 0 keeps columns 0, 2, 3, 4, 5 (panel 0: 0, 2, 3; panel 1: 4, 5); row 1 keeps none; row 2 keeps 1 and 5.
        var m = new float[3 * 6];
        foreach (var (r, c) in new[] { (0, 0), (0, 2), (0, 3), (0, 4), (0, 5), (2, 1), (2, 5) }) m[r * 6 + c] = 1;
        var csr = CsrMatrix.FromMask((Tensor.From(m, 3, 6)).ToMask(), panelWidth: 4);
        var layout = csr.Padded;
        layout.GroupPointers.Should().Equal(0, 1, 1, 2, /* panel 1 */ 2, 3, 3, 4);
        layout.Groups.Should().Be(4);
        layout.Columns.Length.Should().Be((4 + PaddedPanels.Lookahead) * PaddedPanels.GroupSize);
        layout.Columns.Take(16).Should().Equal(
            0, 2, 3, 3,   // row 0, panel 0: the last column repeats as padding
            1, 1, 1, 1,   // row 2, panel 0
            0, 1, 1, 1,   // row 0, panel 1: columns 4, 5 relative to the panel's first (4)
            1, 1, 1, 1);  // row 2, panel 1
        layout.Columns.Skip(16).Should().OnlyContain(c => c == 0);
        var values = new float[] { 1, 2, 3, 4, 5, 6, 7 }; // CSR order: (0,0) (0,2) (0,3) (2,1) | (0,4) (0,5) (2,5)
        var padded = new float[16];
        layout.GatherValues(csr, values, padded);
        padded.Should().Equal(1, 2, 3, 0, 4, 0, 0, 0, 5, 6, 0, 0, 7, 0, 0, 0);
        var map = SlotMap(csr, null);
        var viaMap = new float[16];
        PaddedPanels.GatherMapped(values, map, viaMap);
        viaMap.Should().Equal(padded);
        ((Action)(() => layout.GatherValues(csr, values, new float[15]))).Should().Throw<ArgumentException>().WithMessage("*16 padded slots*");
    }

    [Theory]
    [InlineData(300, 700, 0.75)]   // six panels, rows in several parallel chunks
    [InlineData(3000, 300, 0.99)]  // many empty runs
    [InlineData(5, 1000, 0.0)]
    public void SpMVMatchesTheDenseProductOverManyPanels(int rows, int cols, double sparsity)
    {
        var g = new Generator(17);
        var w = Tensor.Randn(new Shape(rows, cols), g);
        var mask = MaskInitializers.Random.Create(w, sparsity, new SparsityRandom(g.NextUInt64()));
        for (int c = 0; c < cols; c++) mask.Values[cols + c] = 0; // an empty row
        var csr = CsrMatrix.FromMask(mask);
        csr.Gather(w.AsReadOnlySpan());
        var x = Tensor.Randn(new Shape(cols), g).ToArray();
        var y = Enumerable.Repeat(float.NaN, rows).ToArray(); // overwritten, not accumulated into
        SparseKernels.SpMV(csr, x, y);
        var ws = w.AsReadOnlySpan().ToArray();
        for (int r = 0; r < rows; r++)
        {
            double expected = 0;
            for (int c = 0; c < cols; c++) if (mask.IsKept(r * cols + c)) expected += (double)ws[r * cols + c] * x[c];
            y[r].Should().BeApproximately((float)expected, 1e-4f * (1 + (float)Math.Abs(expected)), $"row {r}");
        }
    }

    [Fact]
    public void PanelsWiderThan16BitsAreSplit()
    {
        // A panel's columns are 16-bit and relative to it: a "one panel" request over 70,000 columns gets two.
        var m = new float[2 * 70_000];
        int[] kept = [3, 65_535, 65_536, 69_999, 70_000 + 12, 70_000 + 66_000];
        foreach (int i in kept) m[i] = 1;
        var csr = CsrMatrix.FromMask((Tensor.From(m, 2, 70_000)).ToMask(), panelWidth: int.MaxValue);
        csr.PanelWidth.Should().Be(CsrMatrix.MaxPanelWidth);
        csr.Panels.Should().Be(2);
        csr.DenseIndices().Order().Should().Equal(kept);
        csr.Gather(Enumerable.Range(0, m.Length).Select(i => (float)(i % 7)).ToArray());
        var x = Enumerable.Range(0, 70_000).Select(i => 1f + i % 3).ToArray();
        var y = new float[2];
        SparseKernels.SpMV(csr, x, y);
        float Expected(int row) => kept.Where(i => i / 70_000 == row).Sum(i => (i % 7) * x[i % 70_000]);
        y.Should().Equal(Expected(0), Expected(1));
    }

    [Theory]
    [InlineData(70, 37, 300, 0.75)]
    [InlineData(130, 300, 20, 0.9)]
    [InlineData(64, 5, 3, 0.0)]
    public void SpMMOverMappedValuesMatchesSpMM(int tokens, int rows, int cols, double sparsity)
    {
        var g = new Generator(5);
        var w = Tensor.Randn(new Shape(rows, cols), g);
        var mask = MaskInitializers.Random.Create(w, sparsity, new SparsityRandom(g.NextUInt64()));
        var csr = CsrMatrix.FromMask(mask);
        csr.Gather(w.AsReadOnlySpan());
        var t = csr.TransposeStructure(out var entryMap);
        var x = Tensor.Randn(new Shape(tokens, rows), g).ToArray();
        var xb = new float[SparseKernels.BlockedLength(rows, tokens)];
        BlockTranspose.ToBlocks(x, tokens, rows, SparseKernels.TokenBlock, xb, SparseKernels.BlockStride(rows));
        var expected = new float[SparseKernels.BlockedLength(cols, tokens)];
        SparseKernels.SpMM(t.WithValues(entryMap.Select(e => csr.Values[e]).ToArray()), xb, expected, tokens);
        var padded = new float[t.Padded.Groups * PaddedPanels.GroupSize];
        PaddedPanels.GatherMapped(csr.Values.AsSpan(0, csr.Nnz), SlotMap(t, entryMap), padded);
        var actual = new float[expected.Length];
        SparseKernels.SpMMFused(t, padded, default, xb, actual, default, tokens);
        actual.Should().Equal(expected);
        csr.TransposeStructure(out var slots, CsrMatrix.DefaultPanelWidth, slotMap: true).RowPointers.Should().Equal(t.RowPointers);
        slots.Should().Equal(SlotMap(t, entryMap), "the slot map written while transposing is the entry map laid out in padded slots");
    }

    [Theory]
    [InlineData(130, 40, 300)]
    [InlineData(300, 37, 140)]  // five token blocks: four ranges of the token split, the last block partial
    [InlineData(64, 9, 129)]
    [InlineData(1, 3, 5)]
    public void SddmmAndRowSumsMatchTheirDefinitionForEveryRunLength(int tokens, int rows, int cols)
    {
        // Row r keeps r % 10 columns of each panel (runs of 0–9 entries: every count of padding in the last group, runs
        // of several groups), and rows 10–19 keep nothing in the second panel.
        var keep = new float[rows * cols];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
            {
                int inPanel = c % CsrMatrix.DefaultPanelWidth;
                bool emptyHere = r is >= 10 and < 20 && c / CsrMatrix.DefaultPanelWidth == 1;
                if (!emptyHere && inPanel % 3 == 0 && inPanel / 3 < r % 10) keep[r * cols + c] = 1; // columns 0, 3, 6, …
            }
        var csr = CsrMatrix.FromMask((Tensor.From(keep, rows, cols)).ToMask());
        var g = new Generator(9);
        var dy = Tensor.Randn(new Shape(tokens, rows), g).ToArray();
        var x = Tensor.Randn(new Shape(tokens, cols), g).ToArray();
        var dyb = new float[SparseKernels.BlockedLength(rows, tokens)];
        var xb = new float[SparseKernels.BlockedLength(cols, tokens)];
        BlockTranspose.ToBlocks(dy, tokens, rows, SparseKernels.TokenBlock, dyb, SparseKernels.BlockStride(rows));
        BlockTranspose.ToBlocks(x, tokens, cols, SparseKernels.TokenBlock, xb, SparseKernels.BlockStride(cols));
        var dense = csr.DenseIndices();
        void Check(float[] dw, float[] sums, string path)
        {
            for (int r = 0; r < rows; r++)
            {
                double expected = 0;
                for (int t = 0; t < tokens; t++) expected += dy[t * rows + r];
                sums[r].Should().BeApproximately((float)expected, 1e-4f * (1 + (float)Math.Abs(expected)), $"row sum {r} ({path})");
            }
            for (int e = 0; e < csr.Nnz; e++)
            {
                int r = dense[e] / cols, c = dense[e] % cols;
                double expected = 0;
                for (int t = 0; t < tokens; t++) expected += (double)dy[t * rows + r] * x[t * cols + c];
                dw[e].Should().BeApproximately((float)expected, 1e-4f * (1 + (float)Math.Abs(expected)), $"entry {e} (row {r}, column {c}; {path})");
            }
            dw[^3..].Should().OnlyContain(v => float.IsNaN(v), $"padding results are not stored past the last entry ({path})");
        }
        var dw = Enumerable.Repeat(float.NaN, csr.Nnz + 3).ToArray(); // NaN: written, not added to; the 3 past the end stay
        var sums = Enumerable.Repeat(float.NaN, rows).ToArray();
        SparseKernels.Sddmm(csr, dyb, xb, dw, tokens, sums);
        Check(dw, sums, "rows split over blocked activations");
        // The token split straight from the rows, where it applies (more than one token block, AVX-512).
        bool splits = SparseKernels.SddmmSplitsTokens(csr, tokens);
        splits.Should().Be(Vector512.IsHardwareAccelerated && tokens > SparseKernels.TokenBlock, "these gradients are small");
        var fromRows = Enumerable.Repeat(float.NaN, csr.Nnz + 3).ToArray();
        var rowSums = Enumerable.Repeat(float.NaN, rows).ToArray();
        if (splits)
        {
            SparseKernels.SddmmFromRows(csr, dy, x, fromRows, tokens, rowSums);
            Check(fromRows, rowSums, "tokens split, from rows");
        }
        else ((Action)(() => SparseKernels.SddmmFromRows(csr, dy, x, fromRows, tokens, rowSums))).Should().Throw<ArgumentException>().WithMessage("*row-split path*");
    }

    [Fact]
    public void OnlySmallGradientsSplitTheTokens()
    {
        // 786,432 kept weights (3 MiB of gradient) split the tokens; one more row does not.
        var small = CsrMatrix.FromMask(Tensor.Ones(768, 1024).ToMask());
        var large = CsrMatrix.FromMask(Tensor.Ones(769, 1024).ToMask());
        SparseKernels.SddmmSplitsTokens(small, 1024).Should().Be(Vector512.IsHardwareAccelerated);
        SparseKernels.SddmmSplitsTokens(small, SparseKernels.TokenBlock).Should().BeFalse("one token block leaves nothing to split");
        SparseKernels.SddmmSplitsTokens(large, 1024).Should().BeFalse("beyond 3 MiB of gradient the row split is faster");
    }

    /// <summary>The reference slot map: each run's entries (through <paramref name="entryMap"/>) at its padded slots, −1 for padding.</summary>
    private static int[] SlotMap(CsrMatrix csr, int[]? entryMap)
    {
        var layout = csr.Padded;
        var map = Enumerable.Repeat(-1, layout.Groups * PaddedPanels.GroupSize).ToArray();
        for (int p = 0; p < csr.Panels; p++)
            for (int r = 0; r < csr.Rows; r++)
            {
                var (s, e) = csr.Range(p, r);
                for (int i = s; i < e; i++) map[layout.Slot(p * (csr.Rows + 1) + r) + i - s] = entryMap is null ? i : entryMap[i];
            }
        return map;
    }
}
