using System.Numerics.Tensors;
using Spdf.Tensors.Autograd;

namespace Spdf.Tensors;

public partial class Tensor
{
    private enum BinaryOp { Add, Sub, Mul, Div }

    /// <summary>Elements per parallel task of an equal-shape binary op; smaller ones run on the calling thread.</summary>
    private const int BinaryChunk = 1 << 16;

    /// <summary><c>d = x + y</c> for equal lengths, split over the cores when large (as an equal-shape <c>Add</c>): the
    /// autograd engine's sums of gradients from two branches (the residual stream's) and into leaves' gradients.</summary>
    /// <exception cref="ArgumentException">x and y differ in length, or d is shorter.</exception>
    internal static void AddParallel(ReadOnlySpan<float> x, ReadOnlySpan<float> y, Span<float> d)
    {
        if (x.Length != y.Length || d.Length < x.Length)
            throw new ArgumentException($"AddParallel: operands of {x.Length} and {y.Length} elements into {d.Length}; expected equal operands and room for them.");
        BinaryKernelParallel(BinaryOp.Add, x, y, d[..x.Length]);
    }

    /// <summary>An equal-shape binary op, split over the cores when large: in a training step its operands are often
    /// out of cache (the residual stream), and two cores keep more of memory's reads in flight than one.</summary>
    private static unsafe void BinaryKernelParallel(BinaryOp op, ReadOnlySpan<float> x, ReadOnlySpan<float> y, Span<float> d)
    {
        if (d.Length < 2 * BinaryChunk) { BinaryKernel(op, x, y, d); return; }
        fixed (float* px = x, py = y, pd = d)
        {
            nint ax = (nint)px, ay = (nint)py, ad = (nint)pd;
            Kernels.Cpu.ParallelChunks.For(d.Length, BinaryChunk, (_, from, to) =>
                BinaryKernel(op, new ReadOnlySpan<float>((float*)ax + from, to - from), new ReadOnlySpan<float>((float*)ay + from, to - from), new Span<float>((float*)ad + from, to - from)));
        }
    }

    private static void BinaryKernel(BinaryOp op, ReadOnlySpan<float> x, ReadOnlySpan<float> y, Span<float> d)
    {
        switch (op)
        {
            case BinaryOp.Add: TensorPrimitives.Add(x, y, d); break;
            case BinaryOp.Sub: TensorPrimitives.Subtract(x, y, d); break;
            case BinaryOp.Mul: TensorPrimitives.Multiply(x, y, d); break;
            default: TensorPrimitives.Divide(x, y, d); break;
        }
    }

    private static void BinaryKernel(BinaryOp op, ReadOnlySpan<float> x, float y, Span<float> d)
    {
        switch (op)
        {
            case BinaryOp.Add: TensorPrimitives.Add(x, y, d); break;
            case BinaryOp.Sub: TensorPrimitives.Subtract(x, y, d); break;
            case BinaryOp.Mul: TensorPrimitives.Multiply(x, y, d); break;
            default: TensorPrimitives.Divide(x, y, d); break;
        }
    }

    private static float Apply(BinaryOp op, float x, float y) => op switch
    {
        BinaryOp.Add => x + y,
        BinaryOp.Sub => x - y,
        BinaryOp.Mul => x * y,
        _ => x / y,
    };

    /// <summary>Element-wise binary op with broadcasting; fast paths for equal shapes, a scalar right side and a row (bias-like) right side.</summary>
    private static float[] BinaryForward(BinaryOp op, Tensor a, Tensor b, Shape outShape)
    {
        var d = GradientPool.Rent(outShape.Numel, clear: false); // every path below writes every element
        if (a.Shape == outShape && b.Shape == outShape) { BinaryKernelParallel(op, a.Storage.AsSpan(0, d.Length), b.Storage.AsSpan(0, d.Length), d.AsSpan(0, d.Length)); return d; }
        if (a.Shape == outShape && b.Numel == 1) { BinaryKernel(op, a.Storage, b.Storage[0], d); return d; }
        if (a.Shape == outShape && Broadcast.IsSuffix(b.Shape, outShape) && b.Numel > 0)
        {
            int row = b.Numel;
            for (int o = 0; o < d.Length; o += row) BinaryKernel(op, a.Storage.AsSpan(o, row), b.Storage, d.AsSpan(o, row));
            return d;
        }
        var ma = Broadcast.OffsetMap(a.Shape, outShape);
        var mb = Broadcast.OffsetMap(b.Shape, outShape);
        for (int i = 0; i < d.Length; i++) d[i] = Apply(op, a.Storage[ma[i]], b.Storage[mb[i]]);
        return d;
    }

    private static Tensor Binary(BinaryOp op, Tensor a, Tensor b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        var outShape = Broadcast.Shapes(a.Shape, b.Shape, op.ToString());
        var result = new Tensor(BinaryForward(op, a, b, outShape), outShape);
        return AutogradEngine.Record(result, op.ToString(), [a, b], g =>
        {
            Tensor? ga = null, gb = null;
            switch (op)
            {
                case BinaryOp.Add:
                    ga = a.RequiresGrad ? Broadcast.SumTo(g, a.Shape) : null;
                    gb = b.RequiresGrad ? Broadcast.SumTo(g, b.Shape) : null;
                    break;
                case BinaryOp.Sub:
                    ga = a.RequiresGrad ? Broadcast.SumTo(g, a.Shape) : null;
                    gb = b.RequiresGrad ? Broadcast.SumTo(new Tensor(Negated(g.Storage), g.Shape), b.Shape) : null;
                    break;
                case BinaryOp.Mul:
                    if (a.RequiresGrad) ga = Broadcast.SumTo(new Tensor(BinaryForward(BinaryOp.Mul, g, b, outShape), outShape), a.Shape);
                    if (b.RequiresGrad) gb = Broadcast.SumTo(new Tensor(BinaryForward(BinaryOp.Mul, g, a, outShape), outShape), b.Shape);
                    break;
                default:
                    // d(a/b)/da = 1/b ; d(a/b)/db = -a/b^2 = -out/b
                    if (a.RequiresGrad) ga = Broadcast.SumTo(new Tensor(BinaryForward(BinaryOp.Div, g, b, outShape), outShape), a.Shape);
                    if (b.RequiresGrad)
                    {
                        var t = BinaryForward(BinaryOp.Div, new Tensor(BinaryForward(BinaryOp.Mul, g, result.Detach(), outShape), outShape), b, outShape);
                        TensorPrimitives.Negate(t, t);
                        gb = Broadcast.SumTo(new Tensor(t, outShape), b.Shape);
                    }
                    break;
            }
            return [ga, gb];
        });
    }

    private static float[] Negated(ReadOnlySpan<float> x)
    {
        var d = GradientPool.Rent(x.Length, clear: false);
        TensorPrimitives.Negate(x, d);
        return d;
    }

    /// <summary><c>a + b</c> with broadcasting.</summary>
    public Tensor Add(Tensor other) => Binary(BinaryOp.Add, this, other);
    /// <summary><c>a - b</c> with broadcasting.</summary>
    public Tensor Sub(Tensor other) => Binary(BinaryOp.Sub, this, other);
    /// <summary><c>a * b</c> element-wise with broadcasting.</summary>
    public Tensor Mul(Tensor other) => Binary(BinaryOp.Mul, this, other);
    /// <summary><c>a / b</c> element-wise with broadcasting.</summary>
    public Tensor Div(Tensor other) => Binary(BinaryOp.Div, this, other);

    /// <summary>Element-wise sum with broadcasting.</summary>
    public static Tensor operator +(Tensor a, Tensor b) => Binary(BinaryOp.Add, a, b);
    /// <summary>Element-wise difference with broadcasting.</summary>
    public static Tensor operator -(Tensor a, Tensor b) => Binary(BinaryOp.Sub, a, b);
    /// <summary>Element-wise product with broadcasting.</summary>
    public static Tensor operator *(Tensor a, Tensor b) => Binary(BinaryOp.Mul, a, b);
    /// <summary>Element-wise quotient with broadcasting.</summary>
    public static Tensor operator /(Tensor a, Tensor b) => Binary(BinaryOp.Div, a, b);
    /// <summary>Adds a scalar.</summary>
    public static Tensor operator +(Tensor a, float s) => a.AddScalar(s);
    /// <summary>Subtracts a scalar.</summary>
    public static Tensor operator -(Tensor a, float s) => a.AddScalar(-s);
    /// <summary>Multiplies by a scalar.</summary>
    public static Tensor operator *(Tensor a, float s) => a.MulScalar(s);
    /// <summary>Multiplies by a scalar.</summary>
    public static Tensor operator *(float s, Tensor a) => a.MulScalar(s);
    /// <summary>Divides by a scalar.</summary>
    public static Tensor operator /(Tensor a, float s) => a.MulScalar(1f / s);
    /// <summary>Negation.</summary>
    public static Tensor operator -(Tensor a) => a.MulScalar(-1f);

    /// <summary><c>x + s</c> for every element.</summary>
    public Tensor AddScalar(float s)
    {
        var d = GradientPool.Rent(Numel, clear: false);
        TensorPrimitives.Add(Storage, s, d);
        return AutogradEngine.Record(new Tensor(d, Shape), "AddScalar", [this], g => [g]);
    }

    /// <summary><c>x * s</c> for every element.</summary>
    public Tensor MulScalar(float s)
    {
        var d = GradientPool.Rent(Numel, clear: false);
        TensorPrimitives.Multiply(Storage, s, d);
        return AutogradEngine.Record(new Tensor(d, Shape), "MulScalar", [this], g =>
        {
            var gd = GradientPool.Rent(g.Numel, clear: false);
            TensorPrimitives.Multiply(g.Storage, s, gd);
            return [new Tensor(gd, Shape)];
        });
    }

    /// <summary>Unary op helper: forward <paramref name="f"/>, backward <c>dx = dy * df(x, y)</c>.</summary>
    private Tensor Unary(string name, Action<ReadOnlySpan<float>, Span<float>> f, Action<float[], float[], float[]> derivative)
    {
        var y = GradientPool.Rent(Numel, clear: true);
        f(Storage, y);
        var x = this;
        return AutogradEngine.Record(new Tensor(y, Shape), name, [this], g =>
        {
            var dydx = GradientPool.Rent(y.Length, clear: true);
            derivative(x.Storage, y, dydx);
            TensorPrimitives.Multiply(dydx, g.Storage, dydx);
            return [new Tensor(dydx, x.Shape)];
        });
    }

    /// <summary>e^x element-wise.</summary>
    public Tensor Exp() => Unary("Exp", TensorPrimitives.Exp, (x, y, d) => y.CopyTo(d, 0));

    /// <summary>Natural logarithm element-wise.</summary>
    public Tensor Log() => Unary("Log", TensorPrimitives.Log, (x, y, d) => TensorPrimitives.Reciprocal(x, d));

    /// <summary>Hyperbolic tangent element-wise.</summary>
    public Tensor Tanh() => Unary("Tanh", TensorPrimitives.Tanh, (x, y, d) =>
    {
        TensorPrimitives.Multiply(y, y, d);
        TensorPrimitives.Negate(d, d);
        TensorPrimitives.Add(d, 1f, d);
    });

    /// <summary>Square root element-wise.</summary>
    public Tensor Sqrt() => Unary("Sqrt", TensorPrimitives.Sqrt, (x, y, d) =>
    {
        TensorPrimitives.Multiply(y, 2f, d);
        TensorPrimitives.Reciprocal(d, d);
    });

    /// <summary><c>x^p</c> element-wise for a scalar exponent.</summary>
    public Tensor Pow(float p) => Unary("Pow", (x, y) => TensorPrimitives.Pow(x, p, y), (x, y, d) =>
    {
        TensorPrimitives.Pow(x, p - 1, d);
        TensorPrimitives.Multiply(d, p, d);
    });

    /// <summary>Rectified linear unit <c>max(x, 0)</c>.</summary>
    public Tensor Relu() => Unary("Relu", (x, y) => TensorPrimitives.Max(x, 0f, y), (x, y, d) =>
    {
        for (int i = 0; i < x.Length; i++) d[i] = x[i] > 0 ? 1f : 0f;
    });

    /// <summary>Logistic sigmoid.</summary>
    public Tensor Sigmoid() => Unary("Sigmoid", TensorPrimitives.Sigmoid, (x, y, d) =>
    {
        for (int i = 0; i < y.Length; i++) d[i] = y[i] * (1 - y[i]);
    });

    /// <summary>GELU with the tanh approximation used by GPT-2
    /// (<c>0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))</c>, <c>torch.nn.functional.gelu(approximate="tanh")</c>).</summary>
    public Tensor Gelu()
    {
        var y = GradientPool.Rent(Numel, clear: false); // every element is written
        Kernels.Cpu.Activations.GeluForward(y, Storage);
        var x = this;
        return AutogradEngine.Record(new Tensor(y, Shape), "Gelu", [this], g =>
        {
            var dx = GradientPool.Rent(x.Numel, clear: false);
            Kernels.Cpu.Activations.GeluBackward(dx, x.Storage, g.Storage);
            return [new Tensor(dx, x.Shape)];
        });
    }

    /// <summary>Replaces elements where <paramref name="mask"/> is non-zero by <paramref name="value"/>
    /// (<c>torch.Tensor.masked_fill</c>); the mask broadcasts to this tensor's shape.</summary>
    /// <exception cref="ArgumentException">The mask does not broadcast to this shape.</exception>
    public Tensor MaskedFill(Tensor mask, float value)
    {
        ArgumentNullException.ThrowIfNull(mask);
        var outShape = Broadcast.Shapes(Shape, mask.Shape, "MaskedFill");
        if (outShape != Shape)
            throw new ArgumentException($"MaskedFill: mask of shape {mask.Shape} must broadcast to the tensor's shape {Shape}.", nameof(mask));
        var map = Broadcast.OffsetMap(mask.Shape, Shape);
        var d = ToArray();
        for (int i = 0; i < d.Length; i++) if (mask.Storage[map[i]] != 0) d[i] = value;
        var x = this;
        return AutogradEngine.Record(new Tensor(d, Shape), "MaskedFill", [this], g =>
        {
            var dx = g.ToArray();
            for (int i = 0; i < dx.Length; i++) if (mask.Storage[map[i]] != 0) dx[i] = 0;
            return [new Tensor(dx, x.Shape)];
        });
    }
}
