using Spdf.Gpu;
using Spdf.Sparsity;
using Spdf.Sparsity.Kernels;
using Spdf.Sparsity.Masks;

namespace Spdf.Gpu.Tests;

/// <summary>One ILGPU CPU accelerator (NVIDIA-like: warps of 32, shared memory, barriers) for every test of the collection.</summary>
public sealed class CpuDeviceFixture : IDisposable
{
    public GpuDevice Device { get; } = GpuDevice.Create(GpuAcceleratorKind.Cpu);

    public void Dispose() => Device.Dispose();
}

[CollectionDefinition("cpu-accelerator")]
public sealed class CpuAcceleratorCollection : ICollectionFixture<CpuDeviceFixture>;

/// <summary>
/// Every GPU kernel, run on ILGPU's CPU accelerator, against Spdf.Sparsity's CPU kernels and the masked-dense reference,
/// at odd shapes (no multiple of a tile or a warp), sparsities 0 to 0.99 and a mask with empty rows and columns.
/// </summary>
[Collection("cpu-accelerator")]
public sealed class GpuKernelTests(CpuDeviceFixture fixture)
{
    private readonly GpuDevice _device = fixture.Device;

    public static TheoryData<double, int> Cases => new()
    {
        { 0.0, 37 }, { 0.5, 37 }, { 0.75, 130 }, { 0.9, 37 }, { 0.99, 37 }, { 0.75, 1 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Sparse_layer_equals_the_cpu_kernels_and_the_masked_dense_reference(double sparsity, int tokens)
    {
        const int inF = 45, outF = 29;
        var rng = new Random(11 + (int)(sparsity * 100) + tokens);
        var mask = MaskInitializers.Random.Create(new float[outF * inF], outF, inF, sparsity, new SparsityRandom(7));
        CheckSparseLayer(mask, tokens, rng);
    }

    [Fact]
    public void The_sddmm_splits_tokens_into_ranges_when_rows_are_few()
    {
        // Five rows make two groups, fewer than any device wants (eight per multiprocessor), so 300 tokens go in two
        // ranges whose sums are added atomically.
        GpuKernels.SddmmSplits(_device, rows: 5, n: 300).Should().Be(2);
        GpuKernels.SddmmSplits(_device, rows: 5, n: 100).Should().Be(1, "a range holds at least 128 tokens");
        GpuKernels.SddmmSplits(_device, rows: 1 << 20, n: 300).Should().Be(1, "enough rows fill the device alone");
        var mask = MaskInitializers.Random.Create(new float[5 * 45], 5, 45, 0.5, new SparsityRandom(8));
        CheckSparseLayer(mask, 300, new Random(8));
    }

    [Fact]
    public void Sparse_layer_handles_empty_rows_and_columns()
    {
        const int inF = 33, outF = 21, tokens = 35;
        var m = new float[outF * inF];
        var rng = new Random(5);
        for (int r = 0; r < outF; r++)
            for (int c = 0; c < inF; c++)
                if (r % 4 != 1 && c % 5 != 2 && rng.NextDouble() < 0.5) m[r * inF + c] = 1; // rows 1, 5, … and columns 2, 7, … empty
        CheckSparseLayer(new SparsityMask(m, outF, inF), tokens, rng);
    }

    [Fact]
    public void An_empty_mask_gives_the_bias_and_zero_gradients()
    {
        var mask = new SparsityMask(new float[6 * 5], 6, 5);
        CheckSparseLayer(mask, 9, new Random(3));
    }

    private void CheckSparseLayer(SparsityMask mask, int tokens, Random rng) => CheckSparseLayer(_device, mask, tokens, rng);

    public static TheoryData<double, int, int> Bf16Cases => new()
    {
        { 0.0, 37, 29 }, { 0.5, 130, 29 }, { 0.75, 301, 5 }, { 0.9, 37, 29 }, { 0.99, 37, 29 }, { 0.75, 1, 29 },
    };

    [Theory]
    [MemberData(nameof(Bf16Cases))]
    public void Bf16_activations_equal_fp32_products_of_the_rounded_activations(double sparsity, int tokens, int outF)
    {
        const int inF = 45;
        var rng = new Random(101 + tokens);
        var mask = MaskInitializers.Random.Create(new float[outF * inF], outF, inF, sparsity, new SparsityRandom(13));
        var (w, bias, x, dy, wMasked) = MaskedLayerData(rng, mask, tokens);
        // The forward and the weight gradient read X rounded; the input gradient reads dY rounded; dY in the weight
        // gradient stays FP32.
        var (yRef, _, dwRef, dbRef) = DenseReference(wMasked, bias, x.Select(RoundBf16).ToArray(), dy, tokens, inF, outF);
        var (_, dxRef, _, _) = DenseReference(wMasked, bias, x, dy.Select(RoundBf16).ToArray(), tokens, inF, outF);
        mask.Apply(dwRef);

        using var layer = new GpuSparseLinear(_device, w, mask, bias, hasBias: true, maxTokens: tokens, GpuActivationPrecision.BFloat16);
        layer.Activations.Should().Be(GpuActivationPrecision.BFloat16);
        var (y, dx) = ForwardBackward(layer, x, dy, tokens);
        Close(y, yRef, "y (BF16 X)");
        Close(dx, dxRef, "dx (BF16 dY)");
        Close(layer.DownloadWeightGrad(), dwRef, "dW (BF16 X)");
        Close(layer.BiasGrad!.ToArray(), dbRef, "db");
        // And BF16 is really in use: FP32 products of the unrounded X differ.
        var (yFp32, _, _, _) = DenseReference(wMasked, bias, x, dy, tokens, inF, outF);
        if (sparsity < 0.99) y.Zip(yFp32).Max(p => Math.Abs(p.First - p.Second)).Should().BeGreaterThan(1e-4f);
    }

    [Fact]
    public void Bf16_rounding_is_round_to_nearest_even()
    {
        RoundBf16(1f).Should().Be(1f);
        RoundBf16(BitConverter.Int32BitsToSingle(0x3F80_8000)).Should().Be(1f, "a tie rounds to the even 0x3F80");
        RoundBf16(BitConverter.Int32BitsToSingle(0x3F81_8000)).Should().Be(BitConverter.Int32BitsToSingle(0x3F82_0000), "a tie rounds to the even 0x3F82");
        RoundBf16(BitConverter.Int32BitsToSingle(0x3F80_8001)).Should().Be(BitConverter.Int32BitsToSingle(0x3F81_0000));
        // The device does the same: one row of activations through the packing kernel and a 1-weight identity layer.
        var mask = new SparsityMask([1f], 1, 1);
        var values = new[] { 1f, BitConverter.Int32BitsToSingle(0x3F80_8000), BitConverter.Int32BitsToSingle(0x3F81_8000), -3.3333333f, float.NaN };
        using var layer = new GpuSparseLinear(_device, [1f], mask, [], hasBias: false, maxTokens: values.Length, GpuActivationPrecision.BFloat16);
        using var xb = _device.Upload<float>(values, "x");
        using var yb = _device.Allocate<float>(values.Length, "y");
        layer.Forward(xb.View, yb.View, values.Length);
        var y = yb.ToArray();
        y[..4].Should().Equal(values[..4].Select(RoundBf16));
        float.IsNaN(y[4]).Should().BeTrue();
    }

    internal static float RoundBf16(float f)
    {
        uint bits = BitConverter.SingleToUInt32Bits(f);
        if (float.IsNaN(f)) return f;
        return BitConverter.UInt32BitsToSingle(((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16);
    }

    internal static void CheckSparseLayer(GpuDevice device, SparsityMask mask, int tokens, Random rng)
    {
        int outF = mask.Rows, inF = mask.Cols;
        var (w, bias, x, dy, wMasked) = MaskedLayerData(rng, mask, tokens);

        // The masked-dense reference, in double.
        var (yRef, dxRef, dwRef, dbRef) = DenseReference(wMasked, bias, x, dy, tokens, inF, outF);
        mask.Apply(dwRef); // the gradient at kept places only

        // Spdf.Sparsity's CPU kernels on the same weights.
        var csr = CsrMatrix.FromMask(mask);
        csr.Gather(w);
        var csrT = csr.TransposeStructure(out _);
        csrT = csrT.WithValues(new float[csrT.Nnz]);
        csrT.Gather(w);
        var yCpu = new float[tokens * outF];
        SparseLinearKernels.Forward(csr, x, yCpu, tokens, bias);
        var dxCpu = new float[tokens * inF];
        var dwCpuValues = new float[csr.Nnz];
        var dbCpu = new float[outF];
        SparseLinearKernels.Backward(csr, csrT, default, dy, x, tokens, dxCpu, dwCpuValues, dbCpu);
        var dwCpu = new float[outF * inF];
        csr.Scatter(dwCpuValues, dwCpu);

        using var layer = new GpuSparseLinear(device, w, mask, bias, hasBias: true, maxTokens: tokens + 3);
        layer.Nnz.Should().Be(mask.KeptCount);
        var (y, dx) = ForwardBackward(layer, x, dy, tokens);
        var dw = layer.DownloadWeightGrad();
        var db = layer.BiasGrad!.ToArray();

        Close(y, yRef, "y vs masked dense");
        Close(dx, dxRef, "dx vs masked dense");
        Close(dw, dwRef, "dW vs masked dense");
        Close(db, dbRef, "db vs masked dense");
        Close(y, yCpu, "y vs CPU kernels");
        Close(dx, dxCpu, "dx vs CPU kernels");
        Close(dw, dwCpu, "dW vs CPU kernels");
        Close(db, dbCpu, "db vs CPU kernels");
        for (int i = 0; i < dw.Length; i++)
            if (!mask.IsKept(i)) dw[i].Should().Be(0f, "a dropped weight has no gradient");
        layer.DownloadWeight().Should().Equal(wMasked);
    }

    [Theory]
    [InlineData(37, 45, 29, true)]
    [InlineData(70, 17, 66, false)]
    [InlineData(1, 64, 64, true)]
    [InlineData(300, 150, 260, true)] // 3 × 3 output tiles of 128, K no multiple of 16
    public void Dense_layer_on_the_tiled_sgemm_equals_the_reference(int tokens, int inF, int outF, bool hasBias) =>
        CheckDenseLayer(_device, tokens, inF, outF, hasBias);

    internal static void CheckDenseLayer(GpuDevice device, int tokens, int inF, int outF, bool hasBias)
    {
        var rng = new Random(tokens + inF);
        var w = Randn(rng, outF * inF);
        var bias = hasBias ? Randn(rng, outF) : [];
        var x = Randn(rng, tokens * inF);
        var dy = Randn(rng, tokens * outF);
        var (yRef, dxRef, dwRef, dbRef) = DenseReference(w, hasBias ? bias : new float[outF], x, dy, tokens, inF, outF);

        using var layer = new GpuDenseLinear(device, w, inF, outF, bias, hasBias, tokens);
        var (y, dx) = ForwardBackward(layer, x, dy, tokens);
        Close(y, yRef, "y");
        Close(dx, dxRef, "dx");
        Close(layer.DownloadWeightGrad(), dwRef, "dW");
        if (hasBias) Close(layer.BiasGrad!.ToArray(), dbRef, "db");
        else layer.BiasGrad.Should().BeNull();
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.75)]
    [InlineData(0.99)]
    public void Decode_equals_the_cpu_spmv(double sparsity)
    {
        const int inF = 77, outF = 41;
        var rng = new Random(17);
        var mask = MaskInitializers.Random.Create(new float[outF * inF], outF, inF, sparsity, new SparsityRandom(3));
        var w = Randn(rng, outF * inF);
        var bias = Randn(rng, outF);
        var x = Randn(rng, inF);
        var csr = CsrMatrix.FromMask(mask);
        csr.Gather(w);
        var yCpu = new float[outF];
        SparseKernels.SpMV(csr, x, yCpu);
        for (int i = 0; i < outF; i++) yCpu[i] += bias[i];

        using var layer = new GpuSparseLinear(_device, w, mask, bias, hasBias: true, maxTokens: 1);
        using var xb = _device.Upload<float>(x, "x");
        using var yb = _device.Allocate<float>(outF, "y");
        layer.Decode(xb.View, yb.View);
        Close(yb.ToArray(), yCpu, "decode");
    }

    [Fact]
    public void AdamW_over_compressed_values_equals_the_engine_update_and_keeps_dropped_weights_at_zero()
    {
        const int inF = 23, outF = 19, tokens = 11;
        var rng = new Random(29);
        var mask = MaskInitializers.Random.Create(new float[outF * inF], outF, inF, 0.75, new SparsityRandom(5));
        var w = Randn(rng, outF * inF);
        var bias = Randn(rng, outF);
        var x = Randn(rng, tokens * inF);
        var dy = Randn(rng, tokens * outF);
        var options = new GpuAdamWOptions(LearningRate: 0.05, WeightDecay: 0.1);

        using var layer = new GpuSparseLinear(_device, w, mask, bias, hasBias: true, maxTokens: tokens);
        using var xb = _device.Upload<float>(x, "x");
        using var dyb = _device.Upload<float>(dy, "dy");
        var kept = mask.KeptIndices();
        var p = kept.Select(i => w[i]).ToArray();
        var pb = (float[])bias.Clone();
        float[] m = new float[p.Length], v = new float[p.Length], mb = new float[outF], vb = new float[outF];
        for (int step = 1; step <= 3; step++)
        {
            layer.Backward(dyb.View, xb.View, default, tokens);
            var g = layer.DownloadWeightGrad();
            var gk = kept.Select(i => g[i]).ToArray();
            var gb = layer.BiasGrad!.ToArray();
            layer.AdamWStep(options);
            double bc1 = 1 - Math.Pow(0.9, step), bc2 = 1 - Math.Pow(0.999, step);
            float decay = (float)(1 - 0.05 * 0.1), stepSize = (float)(0.05 / bc1), inv = (float)(1 / Math.Sqrt(bc2));
            Spdf.Tensors.Optim.AdamW.Update(p, gk, m, v, decay, 0.9f, 0.999f, stepSize, inv, 1e-8f);
            Spdf.Tensors.Optim.AdamW.Update(pb, gb, mb, vb, decay, 0.9f, 0.999f, stepSize, inv, 1e-8f);
        }
        layer.Steps.Should().Be(3);
        Close(layer.Values.ToArray(), p, "kept weights after three steps");
        Close(layer.Bias!.ToArray(), pb, "bias after three steps");
        var dense = layer.DownloadWeight();
        for (int i = 0; i < dense.Length; i++)
            if (!mask.IsKept(i)) dense[i].Should().Be(0f);
    }

    [Fact]
    public void The_input_gradient_follows_the_weights_after_a_step()
    {
        const int inF = 31, outF = 27, tokens = 13;
        var rng = new Random(41);
        var mask = MaskInitializers.Random.Create(new float[outF * inF], outF, inF, 0.5, new SparsityRandom(9));
        var w = Randn(rng, outF * inF);
        var x = Randn(rng, tokens * inF);
        var dy = Randn(rng, tokens * outF);
        using var layer = new GpuSparseLinear(_device, w, mask, [], hasBias: false, maxTokens: tokens);
        using var xb = _device.Upload<float>(x, "x");
        using var dyb = _device.Upload<float>(dy, "dy");
        using var dxb = _device.Allocate<float>(tokens * inF, "dx");
        layer.Backward(dyb.View, xb.View, dxb.View, tokens);
        layer.AdamWStep(new GpuAdamWOptions(LearningRate: 0.1));
        layer.Backward(dyb.View, xb.View, dxb.View, tokens);
        var (_, dxRef, _, _) = DenseReference(layer.DownloadWeight(), new float[outF], x, dy, tokens, inF, outF);
        Close(dxb.ToArray(), dxRef, "dx after the step (Wᵀ refreshed)");

        var w2 = Randn(rng, outF * inF);
        layer.LoadWeight(w2);
        layer.Backward(dyb.View, xb.View, dxb.View, tokens);
        mask.Apply(w2);
        (_, dxRef, _, _) = DenseReference(w2, new float[outF], x, dy, tokens, inF, outF);
        Close(dxb.ToArray(), dxRef, "dx after LoadWeight");
    }

    [Fact]
    public void Zero_tokens_clear_the_gradients()
    {
        var mask = MaskInitializers.Random.Create(new float[8 * 6], 8, 6, 0.5, new SparsityRandom(1));
        var rng = new Random(2);
        using var layer = new GpuSparseLinear(_device, Randn(rng, 48), mask, Randn(rng, 8), hasBias: true, maxTokens: 4);
        using var xb = _device.Upload<float>(Randn(rng, 24), "x");
        using var dyb = _device.Upload<float>(Randn(rng, 32), "dy");
        layer.Backward(dyb.View, xb.View, default, 4);
        layer.DownloadWeightGrad().Should().Contain(v => v != 0);
        layer.Backward(dyb.View, xb.View, default, 0);
        layer.DownloadWeightGrad().Should().OnlyContain(v => v == 0);
        layer.BiasGrad!.ToArray().Should().OnlyContain(v => v == 0);
    }

    /// <summary>One forward and one backward pass of <paramref name="layer"/> on host data; y and dX back on the host.</summary>
    private static (float[] Y, float[] Dx) ForwardBackward(GpuLinear layer, float[] x, float[] dy, int tokens)
    {
        var device = layer.Device;
        using var xb = device.Upload<float>(x, "x");
        using var dyb = device.Upload<float>(dy, "dy");
        using var yb = device.Allocate<float>((long)tokens * layer.OutFeatures, "y");
        using var dxb = device.Allocate<float>((long)tokens * layer.InFeatures, "dx");
        layer.Forward(xb.View, yb.View, tokens);
        layer.Backward(dyb.View, xb.View, dxb.View, tokens);
        return (yb.ToArray(), dxb.ToArray());
    }

    /// <summary>A layer's random weight, bias, input and output gradient for <paramref name="tokens"/> tokens (drawn in that
    /// order), and the weight with the mask applied.</summary>
    private static (float[] W, float[] Bias, float[] X, float[] Dy, float[] WMasked) MaskedLayerData(Random rng, SparsityMask mask, int tokens)
    {
        int outF = mask.Rows, inF = mask.Cols;
        var w = Randn(rng, outF * inF);
        var bias = Randn(rng, outF);
        var x = Randn(rng, tokens * inF);
        var dy = Randn(rng, tokens * outF);
        var wMasked = (float[])w.Clone();
        mask.Apply(wMasked);
        return (w, bias, x, dy, wMasked);
    }

    internal static float[] Randn(Random rng, int n)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
        return a;
    }

    internal static (float[] Y, float[] Dx, float[] Dw, float[] Db) DenseReference(float[] w, float[] bias, float[] x, float[] dy, int n, int inF, int outF)
    {
        var y = new float[n * outF];
        var dx = new float[n * inF];
        var dw = new float[outF * inF];
        var db = new float[outF];
        for (int t = 0; t < n; t++)
            for (int o = 0; o < outF; o++)
            {
                double s = bias[o];
                for (int i = 0; i < inF; i++) s += (double)x[t * inF + i] * w[o * inF + i];
                y[t * outF + o] = (float)s;
            }
        for (int t = 0; t < n; t++)
            for (int i = 0; i < inF; i++)
            {
                double s = 0;
                for (int o = 0; o < outF; o++) s += (double)dy[t * outF + o] * w[o * inF + i];
                dx[t * inF + i] = (float)s;
            }
        for (int o = 0; o < outF; o++)
        {
            double sb = 0;
            for (int t = 0; t < n; t++) sb += dy[t * outF + o];
            db[o] = (float)sb;
            for (int i = 0; i < inF; i++)
            {
                double s = 0;
                for (int t = 0; t < n; t++) s += (double)dy[t * outF + o] * x[t * inF + i];
                dw[o * inF + i] = (float)s;
            }
        }
        return (y, dx, dw, db);
    }

    internal static void Close(float[] actual, float[] expected, string what)
    {
        actual.Length.Should().Be(expected.Length, what);
        for (int i = 0; i < actual.Length; i++)
        {
            float tol = 1e-4f + 1e-4f * Math.Abs(expected[i]);
            if (!(Math.Abs(actual[i] - expected[i]) <= tol))
                throw new Xunit.Sdk.XunitException($"{what}: element {i} is {actual[i]}, expected {expected[i]} (tolerance {tol}).");
        }
    }
}
