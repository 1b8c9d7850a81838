using System.Buffers.Binary;
using System.Text;
using Spdf.Tensors.Serialization;

namespace Spdf.Tensors.Tests;

public class SafeTensorsTests
{
    private static byte[] Build(string header, byte[] data)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + h.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)h.Length);
        h.CopyTo(bytes, 8); data.CopyTo(bytes, 8 + h.Length);
        return bytes;
    }

    [Fact]
    public void RoundTripsTensorsAndMetadataThroughAFile()
    {
        var dir = Directory.CreateTempSubdirectory("spdf-st").FullName;
        var path = Path.Combine(dir, "m.safetensors");
        var a = Tensor.Randn(new Shape(3, 5), new Generator(1));
        var b = Tensor.From([1f, 2f]);
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["b"] = b, ["a.weight"] = a, ["s"] = Tensor.Scalar(7f) }, new Dictionary<string, string> { ["format"] = "pt" });
        var (t, meta) = SafeTensors.Load(path);
        t.Keys.Should().Equal("a.weight", "b", "s");
        t["a.weight"].ToArray().Should().Equal(a.ToArray());
        t["s"].Shape.Rank.Should().Be(0);
        meta["format"].Should().Be("pt");
        Directory.GetFiles(dir).Should().ContainSingle("no temporary file is left behind");
        ((8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(File.ReadAllBytes(path))) % 8).Should().Be(0, "the header is padded to 8 bytes");
    }

    [Fact]
    public void ReadsF16AndBF16AsFloat32()
    {
        var data = new byte[8];
        BinaryPrimitives.WriteHalfLittleEndian(data, (Half)1.5f);
        BinaryPrimitives.WriteHalfLittleEndian(data.AsSpan(2), (Half)(-2f));
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(4), (ushort)(BitConverter.SingleToUInt32Bits(3.25f) >> 16));
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(6), (ushort)(BitConverter.SingleToUInt32Bits(-0.5f) >> 16));
        var bytes = Build("{\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[4,8]}}", data);
        var (t, _) = SafeTensors.Deserialize(bytes);
        t["h"].ToArray().Should().Equal(1.5f, -2f);
        t["b"].ToArray().Should().Equal(3.25f, -0.5f);
    }

    [Theory]
    [InlineData("{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "*dtype I64*")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "*needs 12*")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "*past the data section*")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "*overlap*")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "*appears twice*")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 8, "*non-negative*")]
    [InlineData("{\"a\":", 8, "*JSON header*invalid*")]
    public void MalformedHeadersAreRejectedWithThePlace(string header, int dataBytes, string message)
    {
        var act = () => SafeTensors.Deserialize(Build(header, new byte[dataBytes]), "f.safetensors");
        act.Should().Throw<SpdfFormatException>().WithMessage("f.safetensors:" + message);
    }

    [Fact]
    public void HeaderLengthLargerThanTheFileIsRejected()
    {
        var bytes = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, 1000);
        var act = () => SafeTensors.Deserialize(bytes, "x");
        act.Should().Throw<SpdfFormatException>().WithMessage("*header length 1000 is larger than the 8 bytes after it*");
        act = () => SafeTensors.Deserialize(new byte[3], "x");
        act.Should().Throw<SpdfFormatException>().WithMessage("*3 bytes*");
    }

    [Fact]
    public void AFailedWriteLeavesThePreviousFileIntact()
    {
        var dir = Directory.CreateTempSubdirectory("spdf-atomic").FullName;
        var path = Path.Combine(dir, "c.bin");
        AtomicFile.WriteAllText(path, "old");
        var act = () => AtomicFile.Write(path, s => { s.Write(new byte[100]); throw new IOException("disk full"); });
        act.Should().Throw<IOException>().WithMessage("disk full");
        File.ReadAllText(path).Should().Be("old");
        Directory.GetFiles(dir).Should().ContainSingle();
    }

    /// <summary>A stream that fails like a full disk (ENOSPC) after a number of bytes.</summary>
    private sealed class FullDiskStream(Stream inner, long capacity) : Stream
    {
        private long _written;
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => _written;
        public override long Position { get => _written; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count)
        {
            if (_written + count > capacity) throw new IOException("No space left on device", 28); // ENOSPC
            inner.Write(buffer, offset, count);
            _written += count;
        }
    }

    [Theory]
    [InlineData("exception")]
    [InlineData("full-disk")]
    public void AnInjectedFaultMidWriteKeepsTheCheckpointIntact(string fault)
    {
        var dir = Directory.CreateTempSubdirectory("spdf-fault").FullName;
        try
        {
            var path = Path.Combine(dir, "model.safetensors");
            var g = new Generator(1);
            var old = new Dictionary<string, Tensor> { ["w"] = Tensor.Randn(new Shape(64, 64), g) };
            SafeTensors.Save(path, old);
            var before = File.ReadAllBytes(path);
            var bytes = SafeTensors.Serialize(new Dictionary<string, Tensor> { ["w"] = Tensor.Randn(new Shape(64, 64), g) });
            Action act = fault == "exception"
                ? () => AtomicFile.Write(path, s => { s.Write(bytes, 0, bytes.Length / 2); throw new InvalidOperationException("injected"); })
                : () => AtomicFile.Write(path, s => new FullDiskStream(s, bytes.Length / 3).Write(bytes, 0, bytes.Length));
            act.Should().Throw<Exception>().Which.Should().BeOfType(fault == "exception" ? typeof(InvalidOperationException) : typeof(IOException));
            File.ReadAllBytes(path).Should().Equal(before, "the previous file is untouched");
            SafeTensors.Load(path).Tensors["w"].AsReadOnlySpan().ToArray().Should().Equal(old["w"].AsReadOnlySpan().ToArray());
            Directory.GetFiles(dir).Should().ContainSingle("the temporary file is removed");
        }
        finally { Directory.Delete(dir, true); }
    }
}
