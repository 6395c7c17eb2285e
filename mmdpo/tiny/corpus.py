"""A small built-in English corpus on which the tiny tokenizer is trained.

Written for this project: everyday prose, dialogue, instructions, numbers and arithmetic, so
that a byte-level BPE learns common English words and the digits and symbols maths data uses.
Changing this text changes the tokenizer's cache key, so cached tokenizers never go stale.
"""

CORPUS = r"""
The morning was quiet. A small boat drifted across the lake while two herons watched from
the reeds. Mira opened the window, made a cup of tea and read the letter again: her brother
would arrive on Friday, after the long journey from the coast.

Question: What is the capital of France?
Answer: The capital of France is Paris. It is known for its museums, bridges and cafes.

Question: Why is the sky blue?
Answer: Sunlight is scattered by the molecules of the air, and blue light, with its shorter
wavelength, is scattered much more than red light. When we look at the sky away from the sun,
we mostly see that scattered blue light.

User: Can you write a short poem about the sea?
Assistant: Grey waves fold over the stones, / the gulls call out the hours, / and the tide
keeps every promise it has ever made to the shore.

User: Please summarise the meeting notes in three points.
Assistant: Sure. First, the team agreed to ship the new release next week. Second, the budget
for the spring campaign was approved. Third, everyone will review the open bugs by Monday.

system: You are a helpful assistant.
user: hello! who are you?
assistant: I am an assistant. I can answer questions, describe images and solve maths problems.
user: what is in this image?
assistant: a small picture with a circle, a square and a triangle.

A good answer is helpful, honest and harmless. It answers the question that was asked, it
says so when it does not know, and it does not invent facts. A bad answer is vague, rude or
wrong, and it may repeat the question without answering it.

The picture shows a red circle on a white background. There is a blue square in the corner,
a green triangle near the bottom, and a yellow star at the top. The image is small and bright.
Describe the image. What colour is the circle? How many shapes can you see? Which shape is
on the left and which is on the right?

In the kitchen, the recipe said: mix 200 g of flour with 2 eggs, add 300 ml of milk, stir
well, and let the batter rest for 30 minutes. Heat the pan, pour a thin layer, and cook each
pancake for about 1 minute on each side.

Solve step by step.
Problem: Tom has 12 apples. He gives 5 to Anna and buys 8 more. How many apples does he have?
Step 1: 12 - 5 = 7.
Step 2: 7 + 8 = 15.
The answer is \boxed{15}.

Problem: Find x if 3x + 7 = 22.
Step 1: 3x = 22 - 7 = 15.
Step 2: x = 15 / 3 = 5.
The answer is \boxed{5}.

Problem: What is 25% of 480?
Solution: 25% = 1/4, and 480 / 4 = 120. So the answer is 120.

Problem: Compute the area of a circle with radius 3.
Solution: A = \pi r^2 = 9\pi \approx 28.27.

Problem: Simplify (x^2 - 9) / (x - 3).
Solution: x^2 - 9 = (x - 3)(x + 3), so the expression equals x + 3 for x != 3.

Problem: If f(x) = 2x^2 - 4x + 1, find f(3).
Solution: f(3) = 2 * 9 - 12 + 1 = 18 - 12 + 1 = 7.

Problem: The sum of the angles of a triangle is 180 degrees. Two angles are 45 and 60.
Solution: 180 - 45 - 60 = 75, so the third angle is 75 degrees.

Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 32 43 54 65 76 87 98 99
100 256 512 1000 1024 2024 2025 3.14 2.718 0.5 -1 -42 1e-6 10^3 2^10 = 1024, 7 * 8 = 56,
81 / 9 = 9, 17 + 25 = 42, 100 - 58 = 42, sqrt(16) = 4, 5! = 120, |x| <= 1, a < b > c,
{ } [ ] ( ) + - * / = ^ % $ # @ & ~ ! ? : ; , . ' " ` \frac{1}{2} \sqrt{2} \sum_{i=1}^{n} i.

def add(a, b):
    return a + b

for i in range(10):
    print(i, i * i)

The library opens at nine o'clock and closes at six. Children's books are on the first floor,
and the reading room is on the second. Please keep your voice down and return the books on
time. Late returns cost a small fee, which goes to the fund for new books.

Weather report: cloudy in the morning, with light rain in the afternoon. Temperatures between
12 and 18 degrees. The wind will come from the west at 20 km/h. Tomorrow should be sunny.

She asked him where he had been. "At the station," he said, "waiting for a train that never
came." They laughed, because it was the third time that week, and walked home together under
the old street lamps, talking about everything and nothing.

Instructions: Read the passage carefully. Then choose the best answer: (A), (B), (C) or (D).
Explain your reasoning in one or two sentences before you give the final answer.

History: The first printing presses in Europe appeared in the fifteenth century. Books became
cheaper, more people learned to read, and ideas travelled faster than ever before.

Science: Water boils at 100 degrees Celsius at sea level. Plants use sunlight, water and carbon
dioxide to make sugar and oxygen. The Earth goes around the Sun once every 365.25 days.

I think the first response is better because it is correct, clear and complete. The second
response makes an arithmetic mistake in the last step, so its final answer is wrong.
Thank you! You're welcome. Hello, how are you today? I'm fine, thanks. Good night.
"""
