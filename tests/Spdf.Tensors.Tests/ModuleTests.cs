using Spdf.Tensors.Nn;

namespace Spdf.Tensors.Tests;

public class ModuleTests
{
    private sealed class Named : Module<Tensor, Tensor>
    {
        [field: ComponentName("c_fc")] public Linear UpProjection { get; private set; } = new(3, 4);
        [ComponentName("ln_1")] private readonly LayerNorm _norm = new(4);
        public Linear Unregistered { get; } = new(4, 4); // a property without the attribute is not a component
        public Named() => RegisterComponents();
        public override Tensor Forward(Tensor x) => _norm.Forward(UpProjection.Forward(x));
    }

    [Fact]
    public void ComponentNamesGivePropertiesAndFieldsTheirCheckpointNames()
    {
        var m = new Named();
        m.NamedParameters().Select(p => p.Name).Should().Equal("c_fc.weight", "c_fc.bias", "ln_1.weight", "ln_1.bias");
        var replacement = new Linear(3, 4);
        m.ReplaceModule("c_fc", replacement);
        m.UpProjection.Should().BeSameAs(replacement, "the property's backing field follows the registered child");
    }

    private sealed class Net : Module<Tensor, Tensor>
    {
        public Linear Proj;
        public readonly Sequential Body;
        public Net()
        {
            Proj = new Linear(4, 3);
            Body = new Sequential(new Linear(3, 3), new Relu(), new Linear(3, 2, hasBias: false));
            RegisterModule("proj", Proj);
            RegisterModule("body", Body);
            RegisterBuffer("step", Tensor.Zeros(1));
        }
        public override Tensor Forward(Tensor x) => Body.Forward(Proj.Forward(x));
    }

    private sealed class Special : Linear
    {
        public Special(Linear l) : base(l.Weight, l.Bias) { }
    }

    [Fact]
    public void NamesFollowPyTorchDottedConvention()
    {
        var net = new Net();
        net.NamedParameters().Select(p => p.Name).Should().Equal("proj.weight", "proj.bias", "body.0.weight", "body.0.bias", "body.2.weight");
        net.StateDict().Keys.Should().Equal("proj.weight", "proj.bias", "body.0.weight", "body.0.bias", "body.2.weight", "step");
        net.NamedModules().Select(m => m.Name).Should().Equal("", "proj", "body", "body.0", "body.1", "body.2");
        net.ParameterCount().Should().Be(4 * 3 + 3 + 9 + 3 + 6);
    }

    [Fact]
    public void TrainAndEvalPropagate()
    {
        var net = new Net();
        net.Eval();
        net.NamedModules().All(m => !m.Module.Training).Should().BeTrue();
        net.Train();
        net.NamedModules().All(m => m.Module.Training).Should().BeTrue();
    }

    [Fact]
    public void StateDictRoundTripsAndRejectsBadKeys()
    {
        var a = new Net(); var b = new Net();
        b.LoadStateDict(a.StateDict());
        b.Proj.Weight.ToArray().Should().Equal(a.Proj.Weight.ToArray());
        var extra = a.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value);
        extra["proj.wieght"] = Tensor.Zeros(3, 4);
        var act = () => b.LoadStateDict(extra);
        act.Should().Throw<ArgumentException>().WithMessage("*unknown key*'proj.wieght'*");
        var wrong = a.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value);
        wrong["proj.weight"] = Tensor.Zeros(4, 3);
        act = () => b.LoadStateDict(wrong);
        act.Should().Throw<ArgumentException>().WithMessage("*'proj.weight' has shape [4, 3]*[3, 4]*");
        var missing = a.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value);
        missing.Remove("body.2.weight");
        act = () => b.LoadStateDict(missing);
        act.Should().Throw<ArgumentException>().WithMessage("*missing key*'body.2.weight'*");
        b.LoadStateDict(missing, strict: false).Missing.Should().Equal("body.2.weight");
    }

    [Fact]
    public void ReplaceModuleUpdatesRegistryFieldsAndContainers()
    {
        var net = new Net();
        var special = new Special(net.Proj);
        net.ReplaceModule("proj", special);
        net.Proj.Should().BeSameAs(special);
        net.GetSubmodule("proj").Should().BeSameAs(special);
        var inner = new Special((Linear)net.Body[0]);
        net.Body.ReplaceModule("0", inner);
        net.Body[0].Should().BeSameAs(inner);
        net.Forward(Tensor.Ones(2, 4)).Shape.Should().Be(new Shape(2, 2));
        var act = () => net.ReplaceModule("nope", special);
        act.Should().Throw<ArgumentException>().WithMessage("*no child 'nope'*");
    }

    [Fact]
    public void ZeroGradClearsGradients()
    {
        var net = new Net();
        net.Forward(Tensor.Ones(2, 4)).Sum().Backward();
        net.Parameters().All(p => p.Grad is not null).Should().BeTrue();
        net.ZeroGrad();
        net.Parameters().All(p => p.Grad is null).Should().BeTrue();
    }

    [Fact]
    public void InitialisersHaveTheirDocumentedSpread()
    {
        var g = new Generator(1);
        var w = new Tensor(new Shape(256, 512));
        Init.KaimingUniform(w, 0f, g);
        float bound = MathF.Sqrt(2f) * MathF.Sqrt(3f / 512);
        w.ToArray().Max().Should().BeLessThanOrEqualTo(bound);
        w.ToArray().Max().Should().BeGreaterThan(bound * 0.99f);
        Init.XavierNormal(w, 1f, g);
        double std = Math.Sqrt(w.ToArray().Select(v => (double)v * v).Average());
        std.Should().BeApproximately(Math.Sqrt(2.0 / (256 + 512)), 0.002);
        Init.Normal(w, 0f, 0.02f, g);
        Math.Sqrt(w.ToArray().Select(v => (double)v * v).Average()).Should().BeApproximately(0.02, 0.0005);
    }
}
