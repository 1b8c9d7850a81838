using Spdf.Sparsity.Kernels;
using Spdf.Tensors;
using Spdf.Tensors.Autograd;
using Spdf.Tensors.Kernels.Cpu;
using Spdf.Tensors.Nn;

namespace Spdf.Sparsity;

/// <summary>
/// A transformer MLP, <c>down(GELU(up(x)))</c>, as one fused op when both projections are <see cref="SparseLinear"/>
/// layers on the compressed kernels: the hidden activation stays in the kernels' token blocks from one product to the
/// next, in the forward and in the backward pass (<see cref="SparseMlpKernels"/>), instead of being moved to rows and
/// back around a GELU of its own. Results equal the two layers and <see cref="Tensor.Gelu"/> called one after the other
/// up to float rounding (the same GELU arithmetic; sums over tokens in another order).
/// </summary>
public static unsafe class SparseMlp
{
    /// <summary>
    /// <c>down(GELU(up(x)))</c> fused, or null when the fused op does not apply and the caller should run the layers:
    /// either projection is not a <see cref="SparseLinear"/>, runs masked-dense (or has not chosen its kernel yet),
    /// captures a dense gradient (RigL), the layers do not form an MLP over x, or the machine or the sizes rule the
    /// fused kernels out (<see cref="SparseMlpKernels.Supports"/>: AVX-512, more than 64 tokens, up to 3 MiB of kept
    /// weights per layer).
    /// </summary>
    /// <param name="up">The up projection, C → H.</param>
    /// <param name="down">The down projection, H → C.</param>
    /// <param name="x">The input, <c>[..., C]</c>.</param>
    public static Tensor? TryForwardGelu(Linear up, Linear down, Tensor x)
    {
        ArgumentNullException.ThrowIfNull(up);
        ArgumentNullException.ThrowIfNull(down);
        ArgumentNullException.ThrowIfNull(x);
        if (up is not SparseLinear u || down is not SparseLinear d) return null;
        if (u.Resolved != SparseKernelMode.Compressed || d.Resolved != SparseKernelMode.Compressed) return null;
        if (u.CaptureDenseGradient || d.CaptureDenseGradient) return null;
        int c = u.InFeatures, h = u.OutFeatures;
        if (x.Rank < 1 || x.Shape[-1] != c || d.InFeatures != h || d.OutFeatures != c) return null;
        int n = x.Shape.Product(0, x.Rank - 1);
        var cu = u.Csr;
        var cd = d.Csr;
        if (!SparseMlpKernels.Supports(cu, cd, n)) return null;

        var wu = u.TrainedWeight;
        var wd = d.TrainedWeight;
        var inputs = new List<Tensor> { x, wu };
        if (u.Bias is not null) inputs.Add(u.Bias);
        inputs.Add(wd);
        if (d.Bias is not null) inputs.Add(d.Bias);
        bool training = GradMode.IsEnabled && inputs.Any(t => t.RequiresGrad);
        var y = CustomOp.RentStorage(n * c, clear: false);
        var saved = training ? AlignedBuffer.Rent(SparseMlpKernels.SavedLength(cu, n)) : null; // nothing else runs a backward pass
        SparseMlpKernels.Forward(cu, u.Bias is { } b1 ? b1.AsReadOnlySpan() : default, cd, d.Bias is { } b2 ? b2.AsReadOnlySpan() : default,
            &Activations.GeluForwardSerial, x.AsReadOnlySpan(), n, saved is null ? default : saved.Span, y);
        var result = new Tensor(y, x.Shape);
        if (saved is null) return result;
        return CustomOp.Record(result, "SparseMlp", [.. inputs], g =>
        {
            var dx = x.RequiresGrad ? CustomOp.RentStorage(n * c, clear: false) : null;
            var du = CustomOp.RentStorage(cu.Nnz, clear: false);
            var dd = CustomOp.RentStorage(cd.Nnz, clear: false);
            var dbu = u.Bias is { RequiresGrad: true } ? new float[h] : null;
            var dbd = d.Bias is { RequiresGrad: true } ? new float[c] : null;
            AlignedBuffer? paddedUT = null, paddedDT = null;
            var cuT = dx is null ? null : u.RentCsrT(out paddedUT);
            var cdT = d.RentCsrT(out paddedDT);
            using (saved)
            using (paddedUT)
            using (paddedDT)
                SparseMlpKernels.Backward(cu, cuT, paddedUT is null ? default : paddedUT.Span, cd, cdT, paddedDT is null ? default : paddedDT.Span,
                    &Activations.GeluForwardWithDerivativeSerial, x.AsReadOnlySpan(), saved.Span, g.AsReadOnlySpan(), n,
                    dx, du, dbu, dd, dbd);
            var grads = new List<Tensor?> { dx is null ? null : new Tensor(dx, x.Shape), WeightGradient(u, cu, du) };
            if (u.Bias is not null) grads.Add(dbu is null ? null : new Tensor(dbu, u.Bias.Shape));
            grads.Add(WeightGradient(d, cd, dd));
            if (d.Bias is not null) grads.Add(dbd is null ? null : new Tensor(dbd, d.Bias.Shape));
            return [.. grads];
        });
    }

    /// <summary>A layer's weight gradient from its kept weights' (shaped by the layer, as its own backward pass does), or
    /// null when the weight takes none.</summary>
    private static Tensor? WeightGradient(SparseLinear layer, CsrMatrix csr, float[] values)
    {
        if (layer.TrainedWeight.RequiresGrad) return layer.WeightGradient(csr, values);
        CustomOp.ReturnStorage(values);
        return null;
    }
}
