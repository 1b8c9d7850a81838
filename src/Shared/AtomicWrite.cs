namespace Spdf.Shared;

/// <summary>
/// Writes a file so that a crash, a full disk or an exception mid-write never leaves a torn file: the content goes to a
/// temporary file in the same folder, is flushed to disk, and is then renamed over the target. Compiled into each
/// assembly that writes files (it is internal).
/// </summary>
internal static class AtomicWrite
{
    /// <summary>Writes a file atomically through <paramref name="write"/>.</summary>
    /// <exception cref="ArgumentException">The path is empty.</exception>
    public static void Write(string path, Action<Stream> write)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(write);
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full) ?? ".";
        Directory.CreateDirectory(dir);
        string tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }
}
