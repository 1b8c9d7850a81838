using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace Spdf.Gpu;

/// <summary>Which ILGPU accelerator runs the kernels.</summary>
public enum GpuAcceleratorKind
{
    /// <summary>The first CUDA device, through the CUDA driver (PTX compiled at run time).</summary>
    Cuda,

    /// <summary>ILGPU's CPU accelerator emulating an NVIDIA device (warps of 32, shared memory, barriers): slow, for
    /// tests and machines without a GPU.</summary>
    Cpu,
}

/// <summary>No CUDA device could be opened.</summary>
public sealed class GpuUnavailableException(string message, Exception? inner = null) : InvalidOperationException(message, inner);

/// <summary>A device allocation did not fit: the message names what was asked, what Spdf holds and the device's size.</summary>
public sealed class GpuMemoryException(string message, Exception? inner = null) : InvalidOperationException(message, inner);

/// <summary>
/// One accelerator, its explicit stream and its loaded kernels: create once, allocate the buffers a training loop needs
/// once (<see cref="Allocate"/>, counted in <see cref="AllocatedBytes"/>), launch many times. Kernels are queued on
/// <see cref="Stream"/> and run in order; <see cref="Synchronize"/> waits for them. Not thread-safe: one device object
/// per host thread.
/// </summary>
public sealed class GpuDevice : IDisposable
{
    private readonly Context _context;
    private long _allocated;
    private GpuKernels? _kernels;

    private GpuDevice(Context context, Accelerator accelerator, GpuAcceleratorKind kind)
    {
        _context = context;
        Accelerator = accelerator;
        Kind = kind;
        Stream = accelerator.CreateStream();
    }

    /// <summary>
    /// Opens the first CUDA device (<see cref="GpuAcceleratorKind.Cuda"/>) or ILGPU's NVIDIA-like CPU accelerator.
    /// </summary>
    /// <exception cref="GpuUnavailableException">CUDA was asked for and no CUDA device (or no CUDA driver) exists.</exception>
    public static GpuDevice Create(GpuAcceleratorKind kind = GpuAcceleratorKind.Cuda)
    {
        if (kind == GpuAcceleratorKind.Cpu)
        {
            var cpu = Context.Create(b => b.CPU(CPUDeviceKind.Nvidia));
            return new GpuDevice(cpu, cpu.CreateCPUAccelerator(0), kind);
        }
        if (kind != GpuAcceleratorKind.Cuda) throw new ArgumentOutOfRangeException(nameof(kind), kind, "Expected Cuda or Cpu.");
        Context? context = null;
        try
        {
            context = Context.Create(b => b.Cuda());
            var devices = context.GetCudaDevices();
            if (devices.Count == 0)
                throw new GpuUnavailableException("No CUDA device: ILGPU found no NVIDIA GPU through the CUDA driver (libcuda). " +
                    "Use GpuAcceleratorKind.Cpu to run the kernels on ILGPU's CPU accelerator.");
            return new GpuDevice(context, context.CreateCudaAccelerator(0), kind);
        }
        catch (Exception e)
        {
            context?.Dispose();
            if (e is GpuUnavailableException) throw;
            throw new GpuUnavailableException($"No CUDA device could be opened ({e.GetType().Name}: {e.Message}). " +
                "Use GpuAcceleratorKind.Cpu to run the kernels on ILGPU's CPU accelerator.", e);
        }
    }

    /// <summary>Whether a CUDA device can be opened here (opens and closes one).</summary>
    public static bool IsCudaAvailable()
    {
        try
        {
            using var d = Create(GpuAcceleratorKind.Cuda);
            return true;
        }
        catch (GpuUnavailableException)
        {
            return false;
        }
    }

    /// <summary>The ILGPU accelerator.</summary>
    public Accelerator Accelerator { get; }

    /// <summary>The stream every kernel of this device is queued on.</summary>
    public AcceleratorStream Stream { get; }

    /// <summary>The kind asked for.</summary>
    public GpuAcceleratorKind Kind { get; }

    /// <summary>The device's name (e.g. "NVIDIA H200").</summary>
    public string Name => Accelerator.Name;

    /// <summary>The device's memory in bytes.</summary>
    public long MemoryBytes => Accelerator.MemorySize;

    /// <summary>Bytes held by buffers allocated through <see cref="Allocate"/> and not yet disposed.</summary>
    public long AllocatedBytes => Interlocked.Read(ref _allocated);

    /// <summary>The kernels, compiled for this accelerator on first use.</summary>
    internal GpuKernels Kernels => _kernels ??= new GpuKernels(this);

    /// <summary>
    /// A device buffer of <paramref name="length"/> elements (contents undefined until written), counted in
    /// <see cref="AllocatedBytes"/> until disposed. <paramref name="what"/> names it in errors.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The length is negative.</exception>
    /// <exception cref="GpuMemoryException">The device has no room for it.</exception>
    public GpuBuffer<T> Allocate<T>(long length, string what) where T : unmanaged
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        long bytes = length * System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        long held = AllocatedBytes, total = MemoryBytes;
        if (total > 0 && held + bytes > total)
            throw new GpuMemoryException($"Out of device memory for {what}: {bytes:N0} bytes asked, {held:N0} already held by Spdf, " +
                $"device {Name} has {total:N0}.");
        MemoryBuffer1D<T, Stride1D.Dense> buffer;
        try
        {
            buffer = Accelerator.Allocate1D<T>(Math.Max(length, 1));
        }
        catch (Exception e) when (e is not ArgumentException)
        {
            throw new GpuMemoryException($"Out of device memory for {what}: {bytes:N0} bytes asked, {held:N0} already held by Spdf, " +
                $"device {Name} has {total:N0} ({e.GetType().Name}: {e.Message}).", e);
        }
        Interlocked.Add(ref _allocated, bytes);
        return new GpuBuffer<T>(this, buffer, length, bytes);
    }

    /// <summary>A buffer holding a copy of <paramref name="data"/>.</summary>
    /// <exception cref="GpuMemoryException">The device has no room for it.</exception>
    public GpuBuffer<T> Upload<T>(ReadOnlySpan<T> data, string what) where T : unmanaged
    {
        var b = Allocate<T>(data.Length, what);
        b.CopyFrom(data);
        return b;
    }

    /// <summary>Waits until every kernel queued on <see cref="Stream"/> has run.</summary>
    public void Synchronize() => Stream.Synchronize();

    internal void Release(long bytes) => Interlocked.Add(ref _allocated, -bytes);

    /// <inheritdoc />
    public void Dispose()
    {
        Stream.Dispose();
        Accelerator.Dispose();
        _context.Dispose();
    }

    /// <inheritdoc />
    public override string ToString() => $"{Kind} device {Name} ({MemoryBytes / (1 << 20):N0} MiB)";
}

/// <summary>Something that holds device memory.</summary>
internal interface IDeviceMemory : IDisposable
{
    /// <summary>Bytes held on the device.</summary>
    long Bytes { get; }
}

/// <summary>A device buffer of <see cref="Length"/> elements, allocated by <see cref="GpuDevice.Allocate"/>.</summary>
public sealed class GpuBuffer<T> : IDeviceMemory where T : unmanaged
{
    private readonly GpuDevice _device;
    private MemoryBuffer1D<T, Stride1D.Dense>? _buffer;
    private readonly long _bytes;

    internal GpuBuffer(GpuDevice device, MemoryBuffer1D<T, Stride1D.Dense> buffer, long length, long bytes)
    {
        _device = device; _buffer = buffer; Length = length; _bytes = bytes;
    }

    /// <summary>Elements.</summary>
    public long Length { get; }

    /// <summary>Bytes on the device.</summary>
    public long Bytes => _bytes;

    /// <summary>The whole buffer as a view kernels take.</summary>
    /// <exception cref="ObjectDisposedException">The buffer was disposed.</exception>
    public ArrayView<T> View => (_buffer ?? throw new ObjectDisposedException(nameof(GpuBuffer<T>))).View.SubView(0, Math.Max(Length, 1));

    /// <summary>The first <paramref name="length"/> elements.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Longer than the buffer.</exception>
    public ArrayView<T> Slice(long length)
    {
        if (length < 0 || length > Length)
            throw new ArgumentOutOfRangeException(nameof(length), length, $"Expected 0 to {Length} elements of this buffer.");
        return View.SubView(0, Math.Max(length, 1));
    }

    /// <summary>Copies <paramref name="data"/> to the start of the buffer (waits for the stream first).</summary>
    /// <exception cref="ArgumentException">Longer than the buffer.</exception>
    public void CopyFrom(ReadOnlySpan<T> data)
    {
        if (data.Length > Length) throw new ArgumentException($"{data.Length} elements do not fit a buffer of {Length}.", nameof(data));
        if (data.Length == 0) return;
        _device.Synchronize();
        View.SubView(0, data.Length).CopyFromCPU(data);
    }

    /// <summary>Copies the first <paramref name="data"/>.Length elements to the host (waits for the stream first).</summary>
    /// <exception cref="ArgumentException">Longer than the buffer.</exception>
    public void CopyTo(Span<T> data)
    {
        if (data.Length > Length) throw new ArgumentException($"{data.Length} elements asked from a buffer of {Length}.", nameof(data));
        if (data.Length == 0) return;
        _device.Synchronize();
        View.SubView(0, data.Length).CopyToCPU(data);
    }

    /// <summary>The buffer's contents on the host.</summary>
    public T[] ToArray()
    {
        var a = new T[Length];
        CopyTo(a);
        return a;
    }

    /// <summary>Sets every element to zero bytes, on the device's stream.</summary>
    public void Clear() => View.MemSetToZero(_device.Stream);

    /// <inheritdoc />
    public void Dispose()
    {
        if (_buffer is null) return;
        _buffer.Dispose();
        _buffer = null;
        _device.Release(_bytes);
    }
}
