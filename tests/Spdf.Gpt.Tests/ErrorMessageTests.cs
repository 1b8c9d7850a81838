using Spdf.Sparsity;
using Spdf.Sparsity.Masks;
using Spdf.Tensors;
using Spdf.Tensors.Nn;
using Spdf.Tensors.Optim;

namespace Spdf.Gpt.Tests;

/// <summary>Rows of docs/errors.md whose messages no other test checks.</summary>
public class ErrorMessageTests
{
    [Fact]
    public void TensorAndOptimizerMessagesNameTheValues()
    {
        FluentActions.Invoking(() => new Tensor(new float[5], new Shape(2, 3))).Should().Throw<ArgumentException>().WithMessage("Data has 5 elements but shape [2, 3] needs 6.*");
        FluentActions.Invoking(() => new Generator(1).SetState([1, 2, 3])).Should().Throw<ArgumentException>().WithMessage("Generator state has 3 words; expected 5.*");
        var lin = new Linear(4, 4);
        var opt = new AdamW(lin.Parameters());
        FluentActions.Invoking(() => opt.LoadStateDict(new Dictionary<string, Tensor> { ["state.0.exp_avg"] = Tensor.Zeros(5) }))
            .Should().Throw<ArgumentException>().WithMessage("Optimizer state 'state.0.exp_avg' has shape [5]*needs [4, 4]*");
        FluentActions.Invoking(() => opt.LoadStateDict(new Dictionary<string, Tensor> { ["bogus"] = Tensor.Zeros(1) }))
            .Should().Throw<ArgumentException>().WithMessage("*'bogus' is not 'state.<index>.<name>'*");
    }

    [Fact]
    public void SparsityMessagesNameTheValues()
    {
        var values = Tensor.Full(new Shape(2, 2), 1f);
        values.AsSpan()[3] = 0.5f;
        FluentActions.Invoking(() => (values).ToMask()).Should().Throw<ArgumentException>().WithMessage("Mask element 3 is 0.5*");
        FluentActions.Invoking(() => new SparsityGroup("re:(", 0.5)).Should().Throw<ArgumentException>().WithMessage("*'re:(' is not a valid regular expression*");
        FluentActions.Invoking(() => new SparsityGroup("x", 1.0)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*1*");
        var model = new GptModel(new GptConfig(1, 16, 2, 8, 20));
        var handle = Sparsifier.Apply(model, SparsityConfig.Default(0.5));
        Transitions.Densify(handle);
        FluentActions.Invoking(() => Transitions.Densify(handle)).Should().Throw<InvalidOperationException>().WithMessage("Densify: the model is already dense*");
        FluentActions.Invoking(() => Transitions.FreezeMask(handle)).Should().Throw<InvalidOperationException>().WithMessage("*densified*");
    }

    [Fact]
    public void GptMessagesNameTheValues()
    {
        var model = new GptModel(new GptConfig(1, 16, 2, 8, 20));
        FluentActions.Invoking(() => model.Forward(new IntTensor(new int[10], new Shape(1, 10)))).Should().Throw<ArgumentException>()
            .WithMessage("Sequence length 10 exceeds the model's context length 8.*");
        FluentActions.Invoking(() => model.Forward(new IntTensor([1, 25], new Shape(1, 2)))).Should().Throw<ArgumentException>().WithMessage("*25*");
        FluentActions.Invoking(() => new GptModel(new GptConfig(1, 10, 3, 8, 20))).Should().Throw<ArgumentException>().WithMessage("*not divisible by Heads 3*");
        FluentActions.Invoking(() => Spdf.Gpt.Evaluation.Perplexity.Loss(model, [(new IntTensor(new int[2], new Shape(1, 2)), new IntTensor([-100, -100], new Shape(1, 2)))]))
            .Should().Throw<ArgumentException>().WithMessage("The batches hold no target tokens*");
        var trainer = new Spdf.Gpt.Training.Trainer(model);
        FluentActions.Invoking(() => trainer.Densify()).Should().Throw<InvalidOperationException>().WithMessage("Densify needs the trainer to hold*");
    }
}
